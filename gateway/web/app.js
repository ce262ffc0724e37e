// The ResolutionFlow web page: engineer queue + handoff context, technician escalations,
// metrics. Plain ES module, no build step, no inline script or style (the page is served
// under a strict Content-Security-Policy). Streams come from /static/stream.js.
import { openStream } from "/static/stream.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const TOKEN_KEY = "rf.token";
const BASE_TITLE = document.title;
// How long before the token expires the page starts warning (a shift should not end
// with a half-written resolution note thrown away by a sudden sign-in screen).
const EXPIRY_WARNING_MS = 10 * 60 * 1000;
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
const PRIORITY_LABEL = {
  PRIORITY_URGENT: "Urgent",
  PRIORITY_HIGH: "High",
  PRIORITY_NORMAL: "Normal",
  PRIORITY_LOW: "Low",
};
// API field names as the people who fill the form know them.
const FIELD_LABEL = {
  problem_summary: "Problem summary",
  notes: "Notes",
  steps_tried: "Steps tried",
  priority: "Priority",
  session_id: "Session",
  request_id: "Request",
  intent: "Kind of handoff",
  resolution_note: "Resolution note",
};

/** @type {{token: string, claims: any}|null} */
let session = null;
/** @type {import("/static/stream.js").StreamHandle|null} */
let stream = null;
let live = false; // the stream is open: actions that need the server are enabled
/** The engineer's queue: handoff id -> handoff (the DOM mirrors it, in queueOrder). */
const queue = new Map();
/** SLA events seen per handoff id: "warning" | "breached". */
const slaSeen = new Map();
/** Who took recently removed cards (id -> handoff), for the loser of a pickup race. */
const taken = new Map();
/** The technician's handoffs. */
const mine = new Map();
let current = null; // the handoff on the context screen
let unseen = 0; // new escalations while the tab was hidden
let flashTimer = 0;
/** Timers of the signed-in session, cleared when it ends. */
let timers = [];

// ---- helpers -------------------------------------------------------------------------------

/** @param {string} token */
function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/**
 * A JSON API call with the bearer token; throws {status, body} on failure. A 401 ends the
 * session: whatever the page shows is no longer backed by a valid sign-in.
 * @param {string} path @param {{method?: string, body?: any}} [opts]
 */
async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${session?.token}` };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((body && body.message) || `HTTP ${response.status}`);
    Object.assign(error, { status: response.status, body });
    if (response.status === 401) authFailed(error.message);
    throw error;
  }
  return body;
}

let lastAnnounced = "";
/** @param {string} message */
function announce(message) {
  const el = $("announcer");
  lastAnnounced = message;
  el.textContent = "";
  // A fresh text node after clearing makes screen readers read repeats too.
  requestAnimationFrame(() => {
    if (lastAnnounced === message) el.textContent = message;
  });
}

/**
 * A message that stays until dismissed (or replaced), in a live region of its own: for
 * outcomes that concern a card that may already be gone.
 * @param {string} message @param {"bad"|"ok"} [kind]
 */
function toast(message, kind = "bad") {
  const close = el("button", { type: "button", class: "quiet", text: "Dismiss" });
  const item = el("div", { class: `toast ${kind}` }, [el("p", { text: message }), close]);
  close.addEventListener("click", () => item.remove());
  $("toasts").append(item);
  while ($("toasts").children.length > 3) $("toasts").firstElementChild?.remove();
}

/** @param {number} seconds */
function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(s / 3600);
  return h < 48 ? `${h}h ${Math.floor((s % 3600) / 60)}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** @param {string} tag @param {Record<string, any>} [props] @param {(Node|string)[]} [children] */
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const priorityLabel = (/** @type {string} */ p) => PRIORITY_LABEL[p] || "Normal";
const priorityKey = (/** @type {string} */ p) => (p || "PRIORITY_NORMAL").replace("PRIORITY_", "").toLowerCase();
const byName = (/** @type {any} */ ref) => (ref && (ref.name || ref.id)) || "someone";
const short = (/** @type {string} */ text, n = 80) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);
const clockTime = (/** @type {number} */ ms) =>
  new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/** Every action button that needs the server is disabled while the stream is down. */
function syncActions() {
  for (const button of document.querySelectorAll("button.needs-live")) {
    /** @type {HTMLButtonElement} */ (button).disabled = !live;
  }
}

// ---- sign-in and the session's end ----------------------------------------------------------

/** @param {string} token */
function signIn(token) {
  const claims = decodeClaims(token.trim());
  if (!claims || !claims.role || !claims.account) {
    $("token-error").textContent = "That is not a ResolutionFlow token (no role or account in it).";
    return;
  }
  const expiresAt = Number(claims.exp) * 1000;
  if (Number.isFinite(expiresAt) && expiresAt <= Date.now()) {
    endSession(`That token expired at ${clockTime(expiresAt)}. Ask for a fresh one.`);
    return;
  }
  session = { token: token.trim(), claims };
  sessionStorage.setItem(TOKEN_KEY, session.token);
  $("sign-in").hidden = true;
  $("sign-in-reason").hidden = true;
  $("token-error").textContent = "";
  $("who").hidden = false;
  document.body.dataset.signedIn = "true";
  $("who-name").textContent = claims.name || claims.sub;
  $("who-name").title = `${claims.name || claims.sub} · ${claims.role} · ${claims.account}`;
  if (Number.isFinite(expiresAt)) watchExpiry(expiresAt);
  if (claims.role === "technician") startTechnician();
  else startEngineer();
}

/** @param {number} expiresAt epoch ms */
function watchExpiry(expiresAt) {
  const check = () => {
    const left = expiresAt - Date.now();
    if (left <= 0) {
      endSession(`Your sign-in expired at ${clockTime(expiresAt)}. Sign in again to keep working.`);
      return;
    }
    const warn = left <= EXPIRY_WARNING_MS;
    $("banner-expiry").hidden = !warn;
    if (warn) {
      $("banner-expiry-text").textContent =
        `Your sign-in expires in ${duration(left / 1000)} (at ${clockTime(expiresAt)}). ` +
        "Finish or save what you are writing, then sign in again with a fresh token.";
    }
  };
  check();
  timers.push(window.setInterval(check, 1000));
}

/**
 * Back to the sign-in screen, with the reason when it was not the person's choice. Tears
 * down everything the session showed, so no stale card keeps an action button.
 * @param {string} reason
 */
function endSession(reason) {
  stream?.close();
  stream = null;
  live = false;
  for (const t of timers) clearInterval(t);
  timers = [];
  session = null;
  current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const map of [queue, slaSeen, taken, mine, working]) map.clear();
  for (const id of ["queue", "working-list", "mine", "toasts", "m-chart", "m-priority"]) $(id).replaceChildren();
  for (const id of ["engineer", "context", "technician", "who", "banner-conn", "banner-expiry", "banner-webhook", "working"]) $(id).hidden = true;
  document.body.dataset.signedIn = "false";
  $("sign-in").hidden = false;
  const why = $("sign-in-reason");
  why.textContent = reason;
  why.hidden = !reason;
  /** @type {HTMLTextAreaElement} */ ($("token-input")).value = "";
  $("sign-in-title").focus?.();
  if (reason) announce(reason);
}

/** Any 401, at load or mid-shift (page call or stream). @param {string} why */
function authFailed(why) {
  if (session) endSession(`Your sign-in is no longer valid (${why}). Sign in again to keep working.`);
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn(/** @type {HTMLTextAreaElement} */ ($("token-input")).value);
});

$("local-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(/** @type {HTMLFormElement} */ ($("local-form")));
  $("local-error").textContent = "";
  try {
    const response = await fetch("/local/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.fromEntries(form.entries())),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
    signIn(body.token);
  } catch (error) {
    $("local-error").textContent = `Could not get a token: ${error.message}`;
  }
});

$("sign-out").addEventListener("click", () => endSession(""));
$("renew").addEventListener("click", () => endSession("Paste a fresh token to continue."));

// ---- connection state -----------------------------------------------------------------------

const STATE_TEXT = {
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  closed: "offline",
  failed: "disconnected",
};

/** @param {string} state @param {any} info */
function showState(state, info) {
  const error = info && info.error;
  if (state === "failed" && error && (error.status === 401 || error.body?.code === "UNAUTHENTICATED")) {
    authFailed(error.message);
    return;
  }
  const badge = $("conn-state");
  badge.dataset.state = state;
  badge.textContent = STATE_TEXT[state] || state;
  live = state === "open";
  const banner = $("banner-conn");
  if (state === "reconnecting") {
    const wait = info.delayMs !== undefined ? ` Trying again in ${(info.delayMs / 1000).toFixed(0)} s.` : "";
    banner.textContent = `Connection to the server lost: the queue may be out of date and actions are paused.${wait}`;
  } else if (state === "failed") {
    banner.textContent = `Disconnected: ${error ? error.message : "the server refused the stream"}. Reload the page to try again.`;
  } else if (state === "closed") {
    banner.textContent = "Disconnected: the live queue has stopped. Reload the page to reconnect.";
  }
  banner.hidden = state === "open" || state === "connecting";
  document.body.dataset.conn = state;
  syncActions();
}

/** @param {string} url @param {(e: any) => void} onEvent @param {(e: any) => void} onReset */
function connect(url, onEvent, onReset) {
  stream?.close();
  stream = openStream({
    url,
    getToken: () => session?.token || "",
    onEvent,
    onReset,
    onState: showState,
    maxDelayMs: 5000,
  });
}

// ---- engineer: the live queue ---------------------------------------------------------------

function startEngineer() {
  $("engineer").hidden = false;
  loadWorking();
  connect("/v1/escalations/stream", onQueueEvent, onQueueReset);
  timers.push(window.setInterval(tick, 1000));
  loadMetrics();
  timers.push(window.setInterval(loadMetrics, 30000));
  loadPresence();
  timers.push(window.setInterval(loadPresence, 5000));
}

/** @param {any} h @param {number} now */
function isBreached(h, now) {
  if (slaSeen.get(h.id) === "breached") return true;
  const due = Date.parse(h.slaDueAt || "");
  return Number.isFinite(due) && now >= due;
}

/**
 * What needs a human first: breached, then the earliest SLA due time (the due time already
 * folds in priority), then the oldest. ListEscalations returns the same order.
 * @param {any} a @param {any} b
 */
function queueOrder(a, b, now = Date.now()) {
  const breached = Number(isBreached(b, now)) - Number(isBreached(a, now));
  if (breached) return breached;
  const due = (h) => {
    const t = Date.parse(h.slaDueAt || "");
    return Number.isFinite(t) ? t : Number.POSITIVE_INFINITY;
  };
  const byDue = due(a) - due(b);
  if (byDue) return byDue;
  const byAge = (Date.parse(a.createdAt || "") || 0) - (Date.parse(b.createdAt || "") || 0);
  return byAge || String(a.id).localeCompare(String(b.id));
}

/** Puts the cards in queueOrder, moving only those out of place (keeps focus where it was). */
function reorder() {
  const list = $("queue");
  const focused = document.activeElement;
  const order = [...queue.values()].sort((a, b) => queueOrder(a, b));
  order.forEach((h, i) => {
    const item = list.querySelector(`:scope > [data-id="${CSS.escape(h.id)}"]`);
    if (item && list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
  });
  if (focused instanceof HTMLElement && focused !== document.activeElement && list.contains(focused)) {
    focused.focus();
  }
}

/** @param {any} reset */
function onQueueReset(reset) {
  queue.clear();
  $("queue").replaceChildren();
  for (const h of reset.handoffs) {
    if (h.status && h.status !== "HANDOFF_STATUS_OPEN") continue;
    queue.set(h.id, h);
    $("queue").append(card(h));
  }
  reorder();
  if (reset.type === "reset") announce(`Queue reloaded: ${queue.size} open escalations.`);
  updateCount();
}

/**
 * An account event (no handoff): one of the account's webhook endpoints was marked
 * failing. Admins can act on it (redeliver or re-enable), so the alert is theirs.
 * @param {any} data
 */
function onWebhookFailing(data) {
  if (session?.claims.role !== "admin") return;
  const e = data.webhookEndpoint || {};
  const what = `${e.host || "an endpoint"}${e.description ? ` (${e.description})` : ""}`;
  const text =
    `Webhook ${what} is failing${e.lastError ? `: ${e.lastError}` : ""}. ` +
    "It gets no events until an admin redelivers or re-enables it.";
  $("banner-webhook-text").textContent = text;
  $("banner-webhook").dataset.endpoint = e.id || "";
  $("banner-webhook").hidden = false;
}
$("banner-webhook-dismiss").addEventListener("click", () => {
  $("banner-webhook").hidden = true;
});

/** @param {any} event */
function onQueueEvent(event) {
  if (event.type === "webhook_failing") {
    onWebhookFailing(event.data || {});
    return;
  }
  const h = event.handoff;
  if (!h || !h.id) return;
  switch (event.type) {
    case "created":
    case "released":
    case "reopened":
      if (h.status && h.status !== "HANDOFF_STATUS_OPEN") break;
      if (queue.has(h.id)) {
        update(h);
        break;
      }
      queue.set(h.id, h);
      $("queue").prepend(card(h, true));
      announce(`New ${priorityLabel(h.priority)} escalation from ${byName(h.createdBy)}: ${short(h.problemSummary || "", 160)}`);
      if (event.type === "created") noticeWhileHidden();
      if (event.type === "created" && h.priority === "PRIORITY_URGENT") {
        alertWhileHidden(`URGENT escalation from ${byName(h.createdBy)}`, h);
      }
      break;
    case "picked_up":
    case "resolved":
    case "cancelled":
      taken.set(h.id, h);
      remove(h.id);
      break;
    case "priority_raised":
      if (!queue.has(h.id)) break;
      update(h);
      announce(`Raised to ${priorityLabel(h.priority)} after its SLA breach: ${short(h.problemSummary || "", 160)}`);
      break;
    case "sla_warning":
    case "sla_breached":
      slaSeen.set(h.id, event.type === "sla_breached" ? "breached" : "warning");
      if (queue.has(h.id)) update(h);
      if (event.type === "sla_breached" && queue.has(h.id)) {
        alertWhileHidden(`SLA breached: ${priorityLabel(h.priority)} escalation waiting`, h);
      }
      break;
    default:
      if (queue.has(h.id)) update(h);
  }
  reorder();
  trackWorking(event.type, h);
  onCollabEvent(withDetail(event));
  updateCount();
  scheduleMetrics();
}

// ---- the engineer's own picked-up escalations (to get back to them after a reload) ----------

/** Escalations this engineer holds: id -> handoff. */
const working = new Map();

async function loadWorking() {
  try {
    // Pages are bounded by bytes as well as by count: follow the tokens (a few at most).
    let token = "";
    for (let page = 0; page < 20; page += 1) {
      const { handoffs = [], nextPageToken = "" } = await api(
        "/v1/handoffs?status=HANDOFF_STATUS_PICKED_UP&intent=HANDOFF_INTENT_ESCALATE&page_size=200" +
          (token ? `&page_token=${encodeURIComponent(token)}` : ""),
      );
      for (const h of handoffs) trackWorking("picked_up", h);
      if (!nextPageToken) break;
      token = nextPageToken;
    }
  } catch {
    // Not essential: the list fills from the stream as well.
  }
}

/** @param {string} type @param {any} h */
function trackWorking(type, h) {
  const mineNow =
    h.status === "HANDOFF_STATUS_PICKED_UP" && h.pickedUpBy && h.pickedUpBy.id === session?.claims.sub;
  if (mineNow) working.set(h.id, h);
  else if (type !== "assessment_ready" && !type.startsWith("sla_")) working.delete(h.id);
  renderWorking();
}

function renderWorking() {
  $("working").hidden = working.size === 0;
  $("m-working").textContent = String(working.size);
  $("working-list").replaceChildren(
    ...[...working.values()].map((h) => {
      const open = el("button", { type: "button", class: "primary", text: "Open" });
      open.setAttribute("aria-label", `Open: ${short(h.problemSummary || "")}`);
      open.addEventListener("click", () => openContext(h.id));
      return el("li", { class: "card", "data-id": h.id, "data-priority": priorityKey(h.priority) }, [
        el("div", { class: "card-head" }, [el("span", { class: "badge priority", text: priorityLabel(h.priority) })]),
        el("p", { class: "summary", dir: "auto", text: h.problemSummary || "" }),
        el("div", { class: "card-actions" }, [open]),
      ]);
    }),
  );
}

/** @param {string} id */
async function openContext(id) {
  try {
    const body = await api(`/v1/escalations/${encodeURIComponent(id)}/context`);
    showContext(body.context);
  } catch (e) {
    if (e.status !== 401) toast(`Could not open it: ${e.message}`);
  }
}

/** @param {any} h @param {boolean} [isNew] */
function card(h, isNew = false) {
  const item = el("li", {
    class: `card${isNew ? " new" : ""}`,
    "data-id": h.id,
    "data-priority": priorityKey(h.priority),
  });
  fillCard(item, h);
  return item;
}

/** @param {any} assessment */
function assessmentState(assessment) {
  const a = assessment || {};
  if (a.status === "ASSESSMENT_STATUS_READY") return { state: "ready", text: a.summary || "" };
  if (a.status === "ASSESSMENT_STATUS_FAILED") return { state: "failed", text: "AI assessment unavailable" };
  return { state: "pending", text: "AI assessment pending…" };
}

/** @param {HTMLElement} item @param {any} h */
function fillCard(item, h) {
  const pickup = el("button", { type: "button", class: "primary pickup needs-live", text: "Pick up" });
  pickup.setAttribute("aria-label", `Pick up: ${short(h.problemSummary || "")}`);
  pickup.disabled = !live;
  pickup.addEventListener("click", () => pickUp(h.id, item));
  const assessment = assessmentState(h.assessment);
  const steps = (h.stepsTried || []).length;
  item.dataset.priority = priorityKey(h.priority); // a raised priority recolours the card
  item.replaceChildren(
    el("div", { class: "card-head" }, [
      el("span", { class: "badge priority", text: priorityLabel(h.priority) }),
      el("span", { class: "sla", "data-sla": "due" }),
      el("span", { class: "wait", "data-created": h.createdAt || "" }),
    ]),
    el("p", { class: "summary", dir: "auto", text: h.problemSummary || "" }),
    el("p", {
      class: "by",
      text: `Escalated by ${byName(h.createdBy)}${steps ? ` · ${steps} step${steps > 1 ? "s" : ""} tried` : ""}${h.notes ? " · has notes" : ""}`,
    }),
    el("p", { class: "assessment", "data-status": assessment.state, text: assessment.text }),
    el("div", { class: "card-actions" }, [pickup]),
  );
  item.dataset.slaDue = h.slaDueAt || "";
  tickCard(item, Date.now());
}

/** @param {any} h */
function update(h) {
  const previous = queue.get(h.id);
  queue.set(h.id, { ...previous, ...h });
  const item = $("queue").querySelector(`[data-id="${CSS.escape(h.id)}"]`);
  if (item) fillCard(/** @type {HTMLElement} */ (item), queue.get(h.id));
}

/** @param {string} id */
function remove(id) {
  queue.delete(id);
  $("queue").querySelector(`[data-id="${CSS.escape(id)}"]`)?.remove();
}

/**
 * The figures beside the queue come from the queue itself (not from a metrics fetch that
 * may be seconds old), so they agree with the cards at every moment.
 */
function updateCount() {
  $("queue-count").textContent = String(queue.size);
  $("queue-empty").hidden = queue.size > 0;
  const now = Date.now();
  // The cards' clocks are set from the same instant as the figures, so they agree.
  for (const item of $("queue").querySelectorAll(".card")) tickCard(/** @type {HTMLElement} */ (item), now);
  $("m-open").textContent = String(queue.size);
  const created = [...queue.values()].map((h) => Date.parse(h.createdAt || "")).filter(Number.isFinite);
  $("m-oldest").textContent = created.length ? duration((now - Math.min(...created)) / 1000) : "–";
  const breached = [...queue.values()].filter((h) => isBreached(h, now)).length;
  $("m-breached").textContent = String(breached);
  $("m-breached").dataset.bad = String(breached > 0);
  $("ctx-live").textContent =
    `${queue.size} open in the queue${breached ? `, ${breached} past SLA` : ""}`;
}

/** Ticking wait times and SLA states. @param {HTMLElement} item @param {number} now */
function tickCard(item, now) {
  const wait = /** @type {HTMLElement} */ (item.querySelector(".wait"));
  const created = Date.parse(wait.dataset.created || "");
  if (Number.isFinite(created)) wait.textContent = `waiting ${duration((now - created) / 1000)}`;
  const due = Date.parse(item.dataset.slaDue || "");
  const sla = /** @type {HTMLElement} */ (item.querySelector(".sla"));
  let state = slaSeen.get(item.dataset.id) || "due";
  if (Number.isFinite(due)) {
    if (now >= due) state = "breached";
    else if (state === "due" && Number.isFinite(created) && now >= created + 0.8 * (due - created)) {
      state = "warning";
    }
    sla.textContent =
      // The server says breached while the due time is still ahead by this browser's clock
      // (clocks differ): no "– ago".
      state === "breached" ? (now >= due ? `SLA breached ${duration((now - due) / 1000)} ago` : "SLA breached")
        : `SLA ${state === "warning" ? "at risk: " : ""}due in ${duration((due - now) / 1000)}`;
  } else {
    sla.textContent = state === "due" ? "" : `SLA ${state}`;
  }
  sla.dataset.sla = state;
  item.dataset.sla = state;
}

function tick() {
  reorder();
  updateCount();
}

// ---- background tab: the title counts new escalations -------------------------------------

function noticeWhileHidden() {
  if (document.visibilityState !== "hidden") return;
  unseen += 1;
  renderTitle(true);
  if (!flashTimer && !reducedMotion.matches) {
    let on = true;
    flashTimer = window.setInterval(() => renderTitle((on = !on)), 1000);
  }
}

// ---- opt-in desktop alerts: URGENT arrivals and SLA breaches while the tab is hidden -------

const ALERTS_KEY = "rf.alerts";
/** @type {AudioContext | null} */
let audio = null;

function alertsOn() {
  return localStorage.getItem(ALERTS_KEY) === "on" && "Notification" in window && Notification.permission === "granted";
}

function renderAlerts() {
  const on = alertsOn();
  $("alerts").textContent = on ? "Alerts on" : "Alerts off";
  $("alerts").setAttribute("aria-pressed", String(on));
}

$("alerts").addEventListener("click", async () => {
  if (alertsOn()) {
    localStorage.setItem(ALERTS_KEY, "off");
  } else if (!("Notification" in window)) {
    announce("This browser cannot show desktop notifications.");
  } else {
    // Asked only on this click: browsers refuse (and users resent) prompts nobody asked for.
    const permission = await Notification.requestPermission();
    if (permission === "granted") localStorage.setItem(ALERTS_KEY, "on");
    else announce("Desktop notifications are blocked for this page in the browser's settings.");
    // Created on the click: browsers let audio start only after a gesture on the page.
    audio = audio || (window.AudioContext ? new AudioContext() : null);
  }
  renderAlerts();
});
renderAlerts();
// A browser without the Notification API gets no button that cannot work.
$("alerts").hidden = !("Notification" in window);
// After a reload alerts may be on with no sound yet: the first gesture on the page allows it.
document.addEventListener(
  "pointerdown",
  () => {
    if (alertsOn() && !audio && window.AudioContext) audio = new AudioContext();
  },
  { once: true },
);

/** A notification and a short two-tone sound, only while the tab is hidden and alerts are on.
 * @param {string} title @param {any} h */
function alertWhileHidden(title, h) {
  if (document.visibilityState !== "hidden" || !alertsOn()) return;
  const shown = new Notification(title, { body: short(h.problemSummary || "", 160), tag: `rf-${h.id}` });
  shown.addEventListener("click", () => {
    window.focus();
    shown.close();
  });
  beep();
}

function beep() {
  const ctx = audio;
  if (!ctx) return;
  const now = ctx.currentTime;
  const gain = ctx.createGain();
  gain.gain.setValueAtTime(0.15, now);
  gain.gain.exponentialRampToValueAtTime(0.001, now + 0.4);
  gain.connect(ctx.destination);
  [880, 660].forEach((frequency, i) => {
    const tone = ctx.createOscillator();
    tone.frequency.value = frequency;
    tone.connect(gain);
    tone.start(now + i * 0.18);
    tone.stop(now + i * 0.18 + 0.16);
  });
}

/** @param {boolean} withCount */
function renderTitle(withCount) {
  document.title = withCount && unseen ? `(${unseen}) New escalation${unseen > 1 ? "s" : ""} · ${BASE_TITLE}` : BASE_TITLE;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  unseen = 0;
  clearInterval(flashTimer);
  flashTimer = 0;
  renderTitle(false);
});

// ---- pick up, the handoff-context screen, resolve / release -------------------------------

/** @param {string} id @param {HTMLElement} item */
async function pickUp(id, item) {
  const summary = queue.get(id)?.problemSummary || item.querySelector(".summary")?.textContent || "";
  try {
    const body = await api(`/v1/escalations/${encodeURIComponent(id)}/pickup`, { method: "POST" });
    remove(id);
    updateCount();
    if (body.context.handoff) trackWorking("picked_up", body.context.handoff);
    showContext(body.context);
  } catch (e) {
    if (e.status === 401) return;
    // The card may already be gone (the picked_up event can beat the 409): the message
    // lives in the toast region, which outlives it.
    const winner = taken.get(id);
    let message = `Could not pick up “${short(summary, 60)}”: ${e.message}`;
    if (e.status === 409) {
      message = winner && winner.pickedUpBy
        ? `${byName(winner.pickedUpBy)} picked up “${short(summary, 60)}” before you.`
        : `Someone else has “${short(summary, 60)}”: ${e.message}`;
      item.classList.add("taken");
    }
    toast(message);
  }
}

/** @param {any} h @param {number} now */
function fillFacts(h, now) {
  const created = Date.parse(h.createdAt || "");
  const picked = Date.parse(h.pickedUpAt || "") || now;
  $("ctx-waited").textContent = Number.isFinite(created)
    ? `${duration((picked - created) / 1000)} before pickup · escalated ${clockTime(created)}`
    : "–";
  const due = Date.parse(h.slaDueAt || "");
  if (!Number.isFinite(due)) $("ctx-sla").textContent = "no target";
  else if (picked <= due) $("ctx-sla").textContent = `met, ${duration((due - picked) / 1000)} to spare · due ${clockTime(due)}`;
  else $("ctx-sla").textContent = `breached, picked up ${duration((picked - due) / 1000)} late · due ${clockTime(due)}`;
  $("ctx-sla").dataset.sla = Number.isFinite(due) && picked > due ? "breached" : "due";
}

/** @param {any} ctx */
function showContext(ctx) {
  const h = ctx.handoff || {};
  current = h;
  $("engineer").hidden = true;
  $("context").hidden = false;
  $("ctx-priority").textContent = priorityLabel(h.priority);
  $("context").dataset.priority = priorityKey(h.priority);
  $("ctx-by").textContent = byName(h.createdBy);
  $("ctx-session").textContent = h.sessionId || "–";
  fillFacts(h, Date.now());
  $("ctx-problem").querySelector(".body").textContent = ctx.problemSummary || h.problemSummary || "";
  const notes = ctx.notes ?? h.notes ?? "";
  const notesBody = $("ctx-notes").querySelector(".body");
  notesBody.textContent = notes || "No notes from the technician.";
  notesBody.classList.toggle("none", !notes);
  const tried = $("ctx-tried").querySelector(".body");
  const steps = ctx.whatsBeenTried || [];
  tried.replaceChildren(
    ...(steps.length
      ? steps.map((/** @type {any} */ s) =>
          el("li", {}, [
            el("span", { class: "step-what", dir: "auto", text: s.description }),
            el("span", { class: "step-outcome", dir: "auto", text: s.outcome || "no outcome recorded" }),
          ]))
      : [el("li", { class: "none", text: "Nothing recorded." })]),
  );
  const a = ctx.aiAssessment || {};
  const assessment = $("ctx-assessment").querySelector(".body");
  $("ctx-assessment").dataset.status = assessmentState(a).state;
  assessment.textContent =
    a.status === "ASSESSMENT_STATUS_READY" ? a.summary || ""
      : a.status === "ASSESSMENT_STATUS_FAILED"
        ? `The AI assessment failed${a.failureReason ? ` (${a.failureReason})` : ""}; work from the steps tried.`
        : "The AI assessment is still being prepared; it appears on the queue card when ready.";
  $("ctx-start").querySelector(".body").textContent = ctx.startHere || "No suggestion: start from the problem summary.";
  $("ctx-start").classList.remove("started");
  $("ctx-error").textContent = "";
  /** @type {HTMLTextAreaElement} */ ($("resolution-note")).value = "";
  $("context-title").textContent = short(ctx.problemSummary || h.problemSummary || "Handoff context", 90);
  $("ctx-provider").textContent = a.status === "ASSESSMENT_STATUS_READY" && a.provider ? `Source: ${a.provider}` : "";
  showSimilar(ctx.similarResolved || []);
  showActivity(h);
  syncActions();
  updateCount();
  $("context-title").focus();
  window.scrollTo(0, 0);
  announce(`Picked up: ${short(ctx.problemSummary || h.problemSummary || "", 160)}`);
}

function backToQueue() {
  current = null;
  $("context").hidden = true;
  $("engineer").hidden = false;
  $("queue-title").focus();
}

$("back").addEventListener("click", backToQueue);

// "Start here" is the first line of the engineer's work log: it starts the resolution
// note with the suggested step, so what was done is written down as it is done.
$("start-here").addEventListener("click", () => {
  const note = /** @type {HTMLTextAreaElement} */ ($("resolution-note"));
  const step = $("ctx-start").querySelector(".body")?.textContent || "";
  const line = `Started with: ${step}\n`;
  if (!note.value.startsWith(line)) note.value = `${line}${note.value}`;
  $("ctx-start").classList.add("started");
  note.focus();
  note.setSelectionRange(note.value.length, note.value.length);
  announce("Started. The note begins with the first step; add what fixed it, then resolve.");
});

$("resolve-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!current) return;
  const note = /** @type {HTMLTextAreaElement} */ ($("resolution-note")).value.trim();
  if (!note) {
    $("ctx-error").textContent = "Write what fixed it before resolving: the next technician needs it.";
    $("resolution-note").focus();
    return;
  }
  try {
    await api(`/v1/escalations/${encodeURIComponent(current.id)}/resolve`, {
      method: "POST",
      body: { resolutionNote: note },
    });
    working.delete(current.id);
    renderWorking();
    announce("Resolved.");
    backToQueue();
  } catch (error) {
    if (error.status !== 401) $("ctx-error").textContent = `Could not resolve: ${humanError(error)}`;
  }
});

$("release").addEventListener("click", async () => {
  if (!current) return;
  try {
    await api(`/v1/escalations/${encodeURIComponent(current.id)}/release`, { method: "POST" });
    working.delete(current.id);
    renderWorking();
    announce("Released to the queue.");
    backToQueue();
  } catch (error) {
    if (error.status !== 401) $("ctx-error").textContent = `Could not release: ${humanError(error)}`;
  }
});

// ---- metrics (history; the live figures come from the queue) -------------------------------

let metricsPending = 0;
function scheduleMetrics() {
  clearTimeout(metricsPending);
  metricsPending = window.setTimeout(loadMetrics, 2000);
}

async function loadMetrics() {
  if (!session) return;
  try {
    const { metrics = {} } = await api("/v1/escalations/metrics");
    $("m-error").textContent = "";
    const pickup = metrics.timeToPickup || {};
    $("m-p50").textContent = pickup.count ? duration(pickup.p50Seconds || 0) : "–";
    $("m-p90").textContent = pickup.count ? duration(pickup.p90Seconds || 0) : "–";
    $("m-chart").replaceChildren(chart(metrics.byDay || []));
    const rows = (metrics.byPriority || []).filter((/** @type {any} */ p) => p.created || p.openNow);
    $("m-priority").replaceChildren(
      ...(rows.length
        ? rows.map((/** @type {any} */ p) =>
            el("li", { "data-priority": priorityKey(p.priority) }, [
              el("span", { class: "badge priority", text: priorityLabel(p.priority) }),
              el("span", { text: `${p.created || 0} created · ${p.slaBreached || 0} breached SLA` }),
            ]))
        : [el("li", { class: "none", text: "No escalations in the last 7 days." })]),
    );
  } catch (error) {
    $("m-error").textContent = error.status === 403 || error.status === 401 ? "" : `Metrics unavailable: ${error.message}`;
  }
}

/**
 * Bars of escalations created per day, with a y axis (counts) and x axis (dates); an
 * empty state says so in words. byDay has no per-priority split. @param {any[]} days
 */
function chart(byDay) {
  // The API lists the days that had escalations; the chart shows all seven (UTC) days.
  const known = new Map(byDay.map((d) => [d.date, d]));
  const days = [];
  for (let back = 6; back >= 0; back -= 1) {
    const date = new Date(Date.now() - back * 86400000).toISOString().slice(0, 10);
    days.push(known.get(date) || { date, created: 0, resolved: 0 });
  }
  const total = days.reduce((n, d) => n + (d.created || 0), 0);
  if (!total) return el("p", { class: "chart-empty", text: "No escalations in the last 7 days." });
  const NS = "http://www.w3.org/2000/svg";
  const left = 22;
  const width = 280;
  const height = 100;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 28}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Escalations created per day: ${total} over ${days.length} days`);
  const max = Math.max(1, ...days.map((d) => d.created || 0));
  const top = 6;
  const plot = height - top;
  const add = (/** @type {string} */ tag, /** @type {Record<string, string|number>} */ attrs, text = "") => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text) node.textContent = text;
    svg.append(node);
    return node;
  };
  // Y axis: 0, the middle and the maximum, with light grid lines.
  for (const value of [...new Set([0, Math.round(max / 2), max])]) {
    const y = top + plot - (value / max) * plot;
    add("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" });
    add("text", { x: left - 4, y: y + 3, "text-anchor": "end", class: "tick" }, String(value));
  }
  add("line", { x1: left, x2: left, y1: top, y2: height, class: "axis" });
  add("line", { x1: left, x2: width, y1: height, y2: height, class: "axis" });
  const slot = (width - left) / Math.max(7, days.length);
  days.forEach((d, i) => {
    const h = ((d.created || 0) / max) * plot;
    const bar = add("rect", { x: left + i * slot + slot * 0.18, y: height - h, width: slot * 0.64, height: h, class: "bar" });
    const title = document.createElementNS(NS, "title");
    title.textContent = `${d.date}: ${d.created || 0} created, ${d.resolved || 0} resolved`;
    bar.append(title);
    add("text", { x: left + i * slot + slot / 2, y: height + 11, "text-anchor": "middle", class: "tick" }, (d.date || "").slice(5));
  });
  add("text", { x: left + (width - left) / 2, y: height + 25, "text-anchor": "middle", class: "label" }, "Date (UTC), escalations created");
  return svg;
}

$("m-refresh").addEventListener("click", loadMetrics);

// ---- technician: escalate and follow -------------------------------------------------------

/** Counts characters against the API's limit (the counter turns red past it). */
function counter(/** @type {HTMLInputElement|HTMLTextAreaElement} */ input, /** @type {HTMLElement} */ out, /** @type {number} */ limit) {
  const update = () => {
    const n = input.value.length;
    out.textContent = `${n.toLocaleString("en")} / ${limit.toLocaleString("en")}`;
    out.dataset.over = String(n > limit);
  };
  input.addEventListener("input", update);
  update();
  return update;
}

const counters = [
  counter(/** @type {HTMLTextAreaElement} */ ($("esc-summary")), $("esc-summary-count"), 2000),
  counter(/** @type {HTMLTextAreaElement} */ ($("esc-notes")), $("esc-notes-count"), 10000),
];

const MAX_STEPS = 50;

function renumberSteps() {
  [...$("steps").children].forEach((row, i) => {
    /** @type {HTMLElement} */ (row.querySelector(".step-n")).textContent = `Step ${i + 1}: what was tried`;
    row.querySelector(".remove-step")?.setAttribute("aria-label", `Remove step ${i + 1}`);
  });
  /** @type {HTMLButtonElement} */ ($("add-step")).disabled = $("steps").children.length >= MAX_STEPS;
}

function addStep(description = "", outcome = "") {
  const remove = el("button", { type: "button", class: "quiet remove-step", text: "Remove" });
  const what = el("input", { class: "step-description", value: description, maxLength: 1000, placeholder: "What was tried" });
  const result = el("input", { class: "step-outcome", value: outcome, maxLength: 200, placeholder: "What happened" });
  const row = el("li", { class: "step" }, [
    el("label", { class: "step-field" }, [el("span", { class: "step-n" }), what]),
    el("label", { class: "step-field" }, [el("span", { text: "Outcome" }), result]),
    remove,
  ]);
  remove.addEventListener("click", () => {
    row.remove();
    if (!$("steps").children.length) addStep();
    renumberSteps();
  });
  $("steps").append(row);
  renumberSteps();
}

$("add-step").addEventListener("click", () => {
  addStep();
  /** @type {HTMLElement} */ ($("steps").lastElementChild?.querySelector("input"))?.focus();
});

function startTechnician() {
  $("technician").hidden = false;
  if (!$("steps").children.length) addStep();
  loadHistory();
  connect("/v1/handoffs/stream", onMineEvent, onMineReset);
  loadPresence();
  timers.push(window.setInterval(loadPresence, 5000));
}

/** Who watches the queue now: names for engineers, the count for technicians. */
async function loadPresence() {
  if (!session) return;
  try {
    const { engineersOnline = 0, engineers = [] } = await api("/v1/presence");
    const count = `${engineersOnline} engineer${engineersOnline === 1 ? "" : "s"} online`;
    $("presence-count").textContent = count;
    $("m-online").textContent = engineers.length ? engineers.map((/** @type {any} */ u) => byName(u)).join(", ") : "–";
    $("m-online").title = count;
  } catch {
    // Presence is a hint; the queue works without it.
  }
}

/**
 * A field violation in the words of the form: `steps_tried[3].description` becomes
 * "Step 4, what was tried" (numbered as the rows on screen, empty rows skipped).
 * @param {string} field @param {number[]} rows
 */
function fieldLabel(field, rows = []) {
  const step = /^steps_tried\[(\d+)\]\.(description|outcome)$/.exec(field);
  if (step) {
    const n = (rows[Number(step[1])] ?? Number(step[1])) + 1;
    return `Step ${n}, ${step[2] === "description" ? "what was tried" : "outcome"}`;
  }
  return FIELD_LABEL[field] || field.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** An API error in human words. @param {any} error @param {number[]} [rows] */
function humanError(error, rows = []) {
  const fields = ((error.body && error.body.details) || [])
    .flatMap((/** @type {any} */ d) => d.fieldViolations || [])
    .map((/** @type {any} */ v) => `${fieldLabel(v.field, rows)}: ${v.description}`);
  if (fields.length) return fields.join("; ");
  if (!error.status) return "the server could not be reached; try again in a moment";
  return String(error.message).replace(/\b([a-z]+(?:_[a-z]+)+)\b/g, (m) => FIELD_LABEL[m] || m.replace(/_/g, " "));
}

$("escalate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  /** @type {number[]} */
  const rows = [];
  const steps = [];
  [...$("steps").querySelectorAll(".step")].forEach((row, i) => {
    const description = /** @type {HTMLInputElement} */ (row.querySelector(".step-description")).value.trim();
    const outcome = /** @type {HTMLInputElement} */ (row.querySelector(".step-outcome")).value.trim();
    if (!description) return;
    rows.push(i);
    steps.push({ description, outcome });
  });
  const summary = /** @type {HTMLTextAreaElement} */ ($("esc-summary")).value.trim();
  $("esc-error").textContent = "";
  if (!summary) {
    $("esc-error").textContent = "Describe the problem first: the problem summary is required.";
    $("esc-summary").focus();
    return;
  }
  const body = {
    requestId: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`,
    sessionId: `web-${session?.claims.sub}`,
    intent: "HANDOFF_INTENT_ESCALATE",
    priority: /** @type {HTMLSelectElement} */ ($("esc-priority")).value,
    problemSummary: summary,
    stepsTried: steps,
    notes: /** @type {HTMLTextAreaElement} */ ($("esc-notes")).value.trim(),
  };
  try {
    const { handoff } = await api("/v1/handoffs", { method: "POST", body });
    upsertMine(handoff);
    /** @type {HTMLFormElement} */ ($("escalate-form")).reset();
    $("steps").replaceChildren();
    addStep();
    for (const update of counters) update();
    announce("Escalated. Engineers see it now.");
  } catch (error) {
    if (error.status !== 401) $("esc-error").textContent = `Could not escalate. ${humanError(error, rows)}`;
  }
});

/** The technician's own escalations, any status: a fresh tab shows resolved ones too. */
async function loadHistory() {
  try {
    const { handoffs = [] } = await api("/v1/handoffs?intent=HANDOFF_INTENT_ESCALATE&page_size=100");
    for (const h of handoffs.reverse()) upsertMine(h, true);
  } catch {
    // The stream's snapshot still shows the open ones.
  }
}

/** @param {any} h */
const isMine = (h) => !h.createdBy || !session || h.createdBy.id === session.claims.sub;

/** @param {any} reset */
function onMineReset(reset) {
  for (const h of reset.handoffs) upsertMine(h);
}

/** @param {any} event */
function onMineEvent(event) {
  if (!event.handoff || !event.handoff.id || !isMine(event.handoff)) return;
  const before = mine.get(event.handoff.id);
  upsertMine(event.handoff);
  event = withDetail(event);
  addToTimeline(event);
  if (event.type === "commented" && event.comment?.author?.id !== session?.claims.sub) {
    announce(`${byName(event.comment?.author)} commented: ${short(event.comment?.body || "", 160)}`);
  }
  if (event.type === "transferred") announce(`Now with ${byName(event.handoff.pickedUpBy)}.`);
  if (event.type === "picked_up") announce(`Picked up by ${byName(event.handoff.pickedUpBy)}.`);
  if (event.type === "resolved") announce("Your escalation was resolved.");
  if (event.type === "released" && before) announce("Your escalation is back in the queue.");
}

/** @param {any} h */
function statusText(h) {
  switch (h.status) {
    case "HANDOFF_STATUS_PICKED_UP":
      return { state: "picked-up", text: `Picked up by ${byName(h.pickedUpBy)}` };
    case "HANDOFF_STATUS_RESOLVED":
      return { state: "resolved", text: `Resolved${h.resolutionNote ? `: ${h.resolutionNote}` : ""}` };
    case "HANDOFF_STATUS_CANCELLED":
      return { state: "cancelled", text: "Cancelled" };
    default:
      return { state: "waiting", text: "Waiting for an engineer" };
  }
}

/** @param {string} id */
async function cancel(id) {
  try {
    const { handoff } = await api(`/v1/handoffs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    upsertMine(handoff);
    announce("Cancelled.");
  } catch (error) {
    if (error.status !== 401) toast(`Could not cancel: ${humanError(error)}`);
  }
}

/** @param {any} h @param {boolean} [older] from the history: goes below what is shown */
function upsertMine(h, older = false) {
  if (!h || !h.id || !isMine(h)) return;
  const previous = mine.get(h.id);
  // History and stream may answer in either order: keep the newest state of each.
  if (previous && Number(previous.sequence || 0) > Number(h.sequence || 0)) return;
  const merged = { ...previous, ...h };
  mine.set(h.id, merged);
  const { state, text } = statusText(merged);
  const children = [
    el("div", { class: "card-head" }, [
      el("span", { class: "badge priority", text: priorityLabel(merged.priority) }),
      el("span", { class: "wait", text: merged.createdAt ? `escalated ${clockTime(Date.parse(merged.createdAt))}` : "" }),
    ]),
    el("p", { class: "summary", dir: "auto", text: merged.problemSummary || "" }),
    el("p", { class: "status", dir: "auto", text }),
  ];
  const actions = [];
  if (state === "waiting") {
    const button = el("button", { type: "button", class: "quiet cancel needs-live", text: "Cancel" });
    button.setAttribute("aria-label", `Cancel: ${short(merged.problemSummary || "")}`);
    button.disabled = !live;
    button.addEventListener("click", () => cancel(h.id));
    actions.push(button);
  }
  if (state !== "cancelled") {
    const toggle = el("button", { type: "button", class: "quiet activity-toggle", text: detailsOpen.has(h.id) ? "Hide activity" : "Activity and comments" });
    toggle.setAttribute("aria-expanded", String(detailsOpen.has(h.id)));
    toggle.addEventListener("click", () => toggleDetails(h.id));
    actions.push(toggle);
  }
  if (actions.length) children.push(el("div", { class: "card-actions" }, actions));
  if (detailsOpen.has(h.id)) children.push(mineDetails(merged, state));
  const item = el("li", { class: "card mine", "data-id": h.id, "data-status": state, "data-priority": priorityKey(merged.priority) }, children);
  const existing = $("mine").querySelector(`[data-id="${CSS.escape(h.id)}"]`);
  if (existing) {
    // Keep the technician's place: a live comment must not take the cursor from the form.
    const focused = document.activeElement;
    const kept = focused instanceof HTMLElement && existing.contains(focused) ? focused.className : "";
    existing.replaceWith(item);
    const again = kept && item.querySelector(`.${kept.split(" ")[0]}`);
    if (again instanceof HTMLElement) again.focus();
  } else if (older) $("mine").append(item);
  else $("mine").prepend(item);
  $("mine-empty").hidden = mine.size > 0;
}

// ---- working together: activity timeline, comments, transfer, reopen -----------------------

/** Timelines loaded so far: handoff id -> events in order (history, then live ones). */
const timelines = new Map();
/** The technician's cards whose activity is open. */
const detailsOpen = new Set();
/** Per handoff: the comment being typed, the reopen reason being typed, the last error. */
const drafts = new Map();
const reasons = new Map();
const detailErrors = new Map();

/** A stream event with the event's own fields (actor, note, comment, previousHolder)
 * beside type, sequence and handoff, as history events have them. @param {any} event */
const withDetail = (event) => ({ ...(event.data || {}), ...event });

/** "EVENT_TYPE_COMMENTED" (history) and "commented" (streams) alike. @param {string} type */
const kind = (type) => String(type || "").replace(/^EVENT_TYPE_/, "").toLowerCase();

/** One event of a handoff in words. @param {any} e */
function describe(e) {
  const h = e.handoff || {};
  switch (kind(e.type)) {
    case "created": return `Escalated by ${byName(h.createdBy)}`;
    case "assessment_ready": return "AI assessment ready";
    case "picked_up": return `Picked up by ${byName(h.pickedUpBy)}`;
    case "released": return `Released to the queue${e.actor ? ` by ${byName(e.actor)}` : ""}`;
    case "transferred":
      return `${byName(e.actor)} transferred it to ${byName(h.pickedUpBy)}${e.note ? `: ${e.note}` : ""}`;
    case "commented": return `${byName(e.comment?.author)}: ${e.comment?.body || ""}`;
    case "sla_warning": return "SLA warning";
    case "sla_breached": return "SLA breached";
    case "priority_raised": return `Priority raised to ${priorityLabel(h.priority)} (SLA breached, nobody on it)`;
    case "resolved": return `Resolved by ${byName(h.pickedUpBy)}${h.resolutionNote ? `: ${h.resolutionNote}` : ""}`;
    case "reopened": return `Reopened by ${byName(e.actor)}${e.note ? `: ${e.note}` : ""}`;
    case "cancelled": return "Cancelled";
    default: return kind(e.type).replace(/_/g, " ");
  }
}

/** @param {any[]} events */
function timelineItems(events) {
  return events.map((e) =>
    el("li", { class: `event ${kind(e.type)}`, "data-type": kind(e.type), "data-sequence": String(e.sequence || "") }, [
      el("time", { text: e.occurredAt ? clockTime(Date.parse(e.occurredAt)) : "" }),
      el("span", { class: "what", dir: "auto", text: describe(e) }),
    ]),
  );
}

/** Every event of the handoff, pages joined. @param {string} id */
async function loadTimeline(id) {
  const events = [];
  let token = "";
  for (let page = 0; page < 50; page += 1) {
    const body = await api(
      `/v1/handoffs/${encodeURIComponent(id)}/history` + (token ? `?page_token=${encodeURIComponent(token)}` : ""),
    );
    events.push(...(body.events || []));
    token = body.nextPageToken || "";
    if (!token) break;
  }
  // Live events that arrived while the history loaded stay, once each.
  const live = (timelines.get(id) || []).filter((e) => !events.some((x) => x.sequence === e.sequence));
  timelines.set(id, [...events, ...live].sort((a, b) => Number(a.sequence) - Number(b.sequence)));
}

/** A live event for a handoff whose timeline is shown. @param {any} event */
function addToTimeline(event) {
  const id = event.handoff?.id;
  const events = id && timelines.get(id);
  if (!events || events.some((e) => e.sequence === event.sequence)) return;
  events.push(event);
  if (current && current.id === id) renderContextTimeline();
  if (detailsOpen.has(id) && mine.has(id)) upsertMine(mine.get(id));
}

function renderContextTimeline() {
  if (!current) return;
  $("ctx-timeline").replaceChildren(...timelineItems(timelines.get(current.id) || []));
}

/** Resolved escalations of the account most like this one, with what fixed them. @param {any[]} similar */
function showSimilar(similar) {
  $("ctx-similar").hidden = similar.length === 0;
  $("ctx-similar").querySelector(".body").replaceChildren(
    ...similar.map((/** @type {any} */ s) =>
      el("li", { "data-id": s.id }, [
        el("span", { class: "similar-problem", dir: "auto", text: s.problemSummary || "" }),
        el("span", { class: "similar-fix", dir: "auto", text: `${byName(s.pickedUpBy)}: ${s.resolutionNote || ""}` }),
      ])),
  );
}

/** The context screen's activity, comment and transfer forms. @param {any} h */
async function showActivity(h) {
  $("collab-error").textContent = "";
  /** @type {HTMLTextAreaElement} */ ($("comment-body")).value = "";
  /** @type {HTMLInputElement} */ ($("transfer-note")).value = "";
  timelines.set(h.id, timelines.get(h.id) || []);
  renderContextTimeline();
  try {
    await loadTimeline(h.id);
    if (current && current.id === h.id) renderContextTimeline();
  } catch (e) {
    if (e.status !== 401) $("collab-error").textContent = `Could not load the activity: ${humanError(e)}`;
  }
  try {
    const { users = [] } = await api("/v1/users");
    const me = session?.claims.sub;
    const options = users
      .filter((/** @type {any} */ u) => u.id !== me)
      .map((/** @type {any} */ u) => el("option", { value: u.id, text: `${u.name || u.id} (${u.id})` }));
    $("transfer-to").replaceChildren(el("option", { value: "", text: "Choose an engineer" }), ...options);
  } catch {
    // Transfer waits for the list; the rest of the screen works without it.
  }
}

/** Stream events for the engineer: the open context, and transfers to or from them. @param {any} event */
function onCollabEvent(event) {
  const h = event.handoff;
  addToTimeline(event);
  const me = session?.claims.sub;
  if (kind(event.type) === "commented" && current && current.id === h.id && event.comment?.author?.id !== me) {
    announce(`${byName(event.comment?.author)} commented: ${short(event.comment?.body || "", 160)}`);
  }
  if (kind(event.type) !== "transferred") return;
  if (h.pickedUpBy?.id === me && event.actor?.id !== me) {
    // Handed to me: it is mine now; open it unless I am in the middle of another one.
    announce(`${byName(event.actor)} transferred “${short(h.problemSummary || "", 80)}” to you.`);
    if (!current) openContext(h.id);
    else if (current.id !== h.id) toast(`${byName(event.actor)} transferred “${short(h.problemSummary || "", 60)}” to you: see In progress.`, "good");
  } else if (current && current.id === h.id && event.previousHolder?.id === me && event.actor?.id !== me) {
    toast(`${byName(event.actor)} transferred it to ${byName(h.pickedUpBy)}.`);
    backToQueue();
  }
}

$("comment-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!current) return;
  const input = /** @type {HTMLTextAreaElement} */ ($("comment-body"));
  const body = input.value.trim();
  if (!body) {
    $("collab-error").textContent = "Write the comment first.";
    input.focus();
    return;
  }
  await postComment(current.id, body, (m) => { $("collab-error").textContent = m; }, () => { input.value = ""; });
});

/** @param {string} id @param {string} body @param {(message: string) => void} report @param {() => void} done */
async function postComment(id, body, report, done) {
  report("");
  try {
    await api(`/v1/handoffs/${encodeURIComponent(id)}/comments`, {
      method: "POST",
      body: { body, requestId: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}` },
    });
    done();
    announce("Comment added.");
  } catch (error) {
    if (error.status !== 401) report(`Could not add the comment: ${humanError(error)}`);
  }
}

$("transfer-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!current) return;
  const to = /** @type {HTMLSelectElement} */ ($("transfer-to")).value;
  if (!to) {
    $("collab-error").textContent = "Choose who takes it over.";
    $("transfer-to").focus();
    return;
  }
  try {
    const { handoff } = await api(`/v1/escalations/${encodeURIComponent(current.id)}/transfer`, {
      method: "POST",
      body: { toUserId: to, note: /** @type {HTMLInputElement} */ ($("transfer-note")).value.trim() },
    });
    working.delete(current.id);
    renderWorking();
    announce(`Transferred to ${byName(handoff.pickedUpBy)}.`);
    backToQueue();
  } catch (error) {
    if (error.status !== 401) $("collab-error").textContent = `Could not transfer: ${humanError(error)}`;
  }
});

/** @param {string} id */
async function toggleDetails(id) {
  if (detailsOpen.has(id)) detailsOpen.delete(id);
  else {
    detailsOpen.add(id);
    if (!timelines.has(id)) timelines.set(id, []);
    loadTimeline(id)
      .then(() => { if (mine.has(id)) upsertMine(mine.get(id)); })
      .catch((error) => { if (error.status !== 401) toast(`Could not load the activity: ${humanError(error)}`); });
  }
  if (mine.has(id)) upsertMine(mine.get(id));
}

/** The technician's activity, comment form and (once resolved) reopen form. @param {any} h @param {string} state */
function mineDetails(h, state) {
  // The card is drawn again on every event of its handoff: what is typed and what was
  // said about it survive that.
  const error = el("p", { class: "error", role: "alert", text: detailErrors.get(h.id) || "" });
  const say = (/** @type {string} */ message) => {
    detailErrors.set(h.id, message);
    error.textContent = message;
  };
  const text = el("textarea", { rows: 2, class: "comment-body", value: drafts.get(h.id) || "" });
  text.addEventListener("input", () => drafts.set(h.id, text.value));
  text.setAttribute("aria-label", "Comment");
  const send = el("button", { type: "submit", class: "needs-live", text: "Add comment" });
  send.disabled = !live;
  const form = el("form", { class: "comment-form", noValidate: true }, [text, send]);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = text.value.trim();
    if (!body) {
      say("Write the comment first.");
      return;
    }
    postComment(h.id, body, say, () => {
      text.value = "";
      drafts.delete(h.id);
    });
  });
  // Focusable: it scrolls, and keyboard users must be able to scroll it too.
  const timeline = el("ol", { class: "timeline", tabIndex: 0, "aria-label": "Activity" }, timelineItems(timelines.get(h.id) || []));
  const parts = [timeline, form];
  if (state === "resolved") {
    const reason = el("input", { class: "reopen-reason", value: reasons.get(h.id) || "" });
    reason.addEventListener("input", () => reasons.set(h.id, reason.value));
    reason.setAttribute("aria-label", "Why it came back");
    reason.placeholder = "Why it came back";
    const again = el("button", { type: "submit", class: "needs-live", text: "Reopen" });
    again.disabled = !live;
    const reopen = el("form", { class: "reopen-form", noValidate: true }, [reason, again]);
    reopen.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!reason.value.trim()) {
        say("Say why it came back: the engineer reads it first.");
        return;
      }
      say("");
      try {
        const { handoff } = await api(`/v1/handoffs/${encodeURIComponent(h.id)}/reopen`, {
          method: "POST",
          body: { reason: reason.value.trim() },
        });
        reasons.delete(h.id);
        upsertMine(handoff);
        announce("Reopened: it is back in the queue.");
      } catch (err) {
        if (err.status !== 401) say(`Could not reopen: ${humanError(err)}`);
      }
    });
    parts.push(reopen);
  }
  parts.push(error);
  return el("div", { class: "activity" }, parts);
}

// ---- start ----------------------------------------------------------------------------------

if (document.body.dataset.localMode === "true") $("local-form").hidden = false;
// For debugging from the console (and the browser tests): the live stream handle.
Object.defineProperty(window, "rf", { value: { get stream() { return stream; }, queue, mine, timelines } });
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
