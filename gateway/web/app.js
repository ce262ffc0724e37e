// The ResolutionFlow web page: engineer queue + handoff context, technician escalations,
// metrics. Plain ES module, no build step. Streams come from /static/stream.js.
import { openStream } from "/static/stream.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const TOKEN_KEY = "rf.token";
const BASE_TITLE = document.title;
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
const PRIORITY_LABEL = {
  PRIORITY_URGENT: "Urgent",
  PRIORITY_HIGH: "High",
  PRIORITY_NORMAL: "Normal",
  PRIORITY_LOW: "Low",
};

/** @type {{token: string, claims: any}|null} */
let session = null;
/** @type {import("/static/stream.js").StreamHandle|null} */
let stream = null;
/** The engineer's queue: handoff id -> handoff (the DOM mirrors it). */
const queue = new Map();
/** SLA events seen per handoff id: "warning" | "breached". */
const slaSeen = new Map();
/** The technician's handoffs. */
const mine = new Map();
let current = null; // the handoff on the context screen
let unseen = 0; // new escalations while the tab was hidden
let flashTimer = 0;
let metricsTimer = 0;

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
 * A JSON API call with the bearer token; throws {status, body} on failure.
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
    throw error;
  }
  return body;
}

/** @param {string} message */
function announce(message) {
  const el = $("announcer");
  el.textContent = "";
  // A fresh text node after clearing makes screen readers read repeats too.
  requestAnimationFrame(() => (el.textContent = message));
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
const byName = (/** @type {any} */ ref) => (ref && (ref.name || ref.id)) || "someone";

// ---- sign-in --------------------------------------------------------------------------------

/** @param {string} token */
function signIn(token) {
  const claims = decodeClaims(token.trim());
  if (!claims || !claims.role || !claims.account) {
    $("token-error").textContent = "That is not a ResolutionFlow token (no role/account claims).";
    return;
  }
  session = { token: token.trim(), claims };
  sessionStorage.setItem(TOKEN_KEY, session.token);
  $("sign-in").hidden = true;
  $("who").hidden = false;
  $("who-name").textContent = `${claims.name || claims.sub} · ${claims.role} · ${claims.account}`;
  if (claims.role === "technician") startTechnician();
  else startEngineer();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
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

$("sign-out").addEventListener("click", signOut);

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
  const badge = $("conn-state");
  badge.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (state === "reconnecting" && info.delayMs !== undefined) {
    text = `reconnecting in ${(info.delayMs / 1000).toFixed(1)}s (attempt ${info.attempt})`;
  }
  if (state === "failed" && info.error) text = `disconnected: ${info.error.message}`;
  badge.textContent = text;
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
  setInterval(tick, 1000);
  loadMetrics();
  metricsTimer = window.setInterval(loadMetrics, 30000);
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
  if (reset.type === "reset") announce(`Queue reloaded: ${queue.size} open escalations.`);
  updateCount();
}

/** @param {any} event */
function onQueueEvent(event) {
  const h = event.handoff;
  if (!h || !h.id) return;
  switch (event.type) {
    case "created":
    case "released":
      if (h.status && h.status !== "HANDOFF_STATUS_OPEN") break;
      if (queue.has(h.id)) {
        update(h);
        break;
      }
      queue.set(h.id, h);
      $("queue").prepend(card(h, true));
      announce(`New ${priorityLabel(h.priority)} escalation from ${byName(h.createdBy)}: ${h.problemSummary}`);
      if (event.type === "created") noticeWhileHidden();
      break;
    case "picked_up":
    case "resolved":
    case "cancelled":
      remove(h.id);
      break;
    case "sla_warning":
    case "sla_breached":
      slaSeen.set(h.id, event.type === "sla_breached" ? "breached" : "warning");
      if (queue.has(h.id)) update(h);
      break;
    default:
      if (queue.has(h.id)) update(h);
  }
  trackWorking(event.type, h);
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
  $("working-list").replaceChildren(
    ...[...working.values()].map((h) => {
      const open = el("button", { type: "button", class: "primary", text: "Open" });
      open.setAttribute("aria-label", `Open: ${h.problemSummary}`);
      open.addEventListener("click", async () => {
        try {
          const body = await api(`/v1/escalations/${encodeURIComponent(h.id)}/context`);
          showContext(body.context);
        } catch (e) {
          announce(`Could not open it: ${e.message}`);
        }
      });
      return el("li", { class: "card", "data-id": h.id, "data-priority": (h.priority || "").replace("PRIORITY_", "").toLowerCase() }, [
        el("div", { class: "card-head" }, [el("span", { class: "priority", text: priorityLabel(h.priority) })]),
        el("p", { class: "summary", text: h.problemSummary || "" }),
        el("div", { class: "card-actions" }, [open]),
      ]);
    }),
  );
}

/** @param {any} h @param {boolean} [isNew] */
function card(h, isNew = false) {
  const item = el("li", {
    class: `card${isNew ? " new" : ""}`,
    "data-id": h.id,
    "data-priority": (h.priority || "PRIORITY_NORMAL").replace("PRIORITY_", "").toLowerCase(),
  });
  fillCard(item, h);
  return item;
}

/** @param {HTMLElement} item @param {any} h */
function fillCard(item, h) {
  const pickup = el("button", { type: "button", class: "primary pickup", text: "Pick up" });
  pickup.setAttribute("aria-label", `Pick up: ${h.problemSummary}`);
  pickup.addEventListener("click", () => pickUp(h.id, item));
  const assessment = h.assessment || {};
  let assessmentText = "AI assessment pending…";
  if (assessment.status === "ASSESSMENT_STATUS_READY") assessmentText = assessment.summary;
  if (assessment.status === "ASSESSMENT_STATUS_FAILED") assessmentText = "AI assessment unavailable";
  item.replaceChildren(
    el("div", { class: "card-head" }, [
      el("span", { class: "priority", text: priorityLabel(h.priority) }),
      el("span", { class: "sla", "data-sla": "due" }),
      el("span", { class: "wait", "data-created": h.createdAt || "" }),
    ]),
    el("p", { class: "summary", text: h.problemSummary || "" }),
    el("p", { class: "by", text: `Escalated by ${byName(h.createdBy)}` }),
    el("p", {
      class: "assessment",
      "data-status": (assessment.status || "ASSESSMENT_STATUS_PENDING").replace("ASSESSMENT_STATUS_", "").toLowerCase(),
      text: assessmentText,
    }),
    el("div", { class: "card-actions" }, [pickup]),
    el("p", { class: "error card-error", role: "alert" }),
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

function updateCount() {
  $("queue-count").textContent = String(queue.size);
  $("queue-empty").hidden = queue.size > 0;
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
      state === "breached" ? `SLA breached ${duration((now - due) / 1000)} ago`
        : `SLA ${state === "warning" ? "warning: " : ""}due in ${duration((due - now) / 1000)}`;
  } else {
    sla.textContent = state === "due" ? "" : `SLA ${state}`;
  }
  sla.dataset.sla = state;
}

function tick() {
  const now = Date.now();
  for (const item of $("queue").querySelectorAll(".card")) tickCard(/** @type {HTMLElement} */ (item), now);
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
  const error = /** @type {HTMLElement} */ (item.querySelector(".card-error"));
  error.textContent = "";
  try {
    const body = await api(`/v1/escalations/${encodeURIComponent(id)}/pickup`, { method: "POST" });
    remove(id);
    updateCount();
    if (body.context.handoff) trackWorking("picked_up", body.context.handoff);
    showContext(body.context);
  } catch (e) {
    // 409: the gateway's message names who has it ("already picked up by …").
    error.textContent = e.status === 409 ? e.message : `Could not pick up: ${e.message}`;
    item.classList.add("taken");
    announce(error.textContent);
  }
}

/** @param {any} ctx */
function showContext(ctx) {
  current = ctx.handoff;
  $("engineer").hidden = true;
  $("context").hidden = false;
  const h = ctx.handoff || {};
  $("ctx-meta").textContent =
    `${priorityLabel(h.priority)} · escalated by ${byName(h.createdBy)} · picked up by ${byName(h.pickedUpBy)}`;
  $("ctx-problem").querySelector(".body").textContent = ctx.problemSummary || h.problemSummary || "";
  const tried = $("ctx-tried").querySelector(".body");
  const steps = ctx.whatsBeenTried || [];
  tried.replaceChildren(
    ...(steps.length
      ? steps.map((/** @type {any} */ s) =>
          el("li", {}, [el("span", { text: s.description }), " → ", el("strong", { text: s.outcome || "no outcome" })]))
      : [el("li", { text: "Nothing recorded." })]),
  );
  const a = ctx.aiAssessment || {};
  $("ctx-assessment").querySelector(".body").textContent =
    a.status === "ASSESSMENT_STATUS_READY" ? `${a.summary}${a.provider ? ` (${a.provider})` : ""}`
      : a.status === "ASSESSMENT_STATUS_FAILED" ? "The AI assessment failed; use the steps above."
        : "The AI assessment is still being prepared.";
  $("ctx-start").querySelector(".body").textContent = ctx.startHere || "";
  $("ctx-error").textContent = "";
  /** @type {HTMLTextAreaElement} */ ($("resolution-note")).value = "";
  $("context-title").focus();
  announce(`Picked up: ${ctx.problemSummary || h.problemSummary}`);
}

function backToQueue() {
  current = null;
  $("context").hidden = true;
  $("engineer").hidden = false;
  $("queue-title").focus();
}

$("start-here").addEventListener("click", () => {
  $("ctx-start").classList.add("started");
  $("resolution-note").focus();
  announce("Started. Write down what fixed it, then resolve.");
});

$("resolve-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!current) return;
  const note = /** @type {HTMLTextAreaElement} */ ($("resolution-note")).value;
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
    $("ctx-error").textContent = `Could not resolve: ${error.message}`;
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
    $("ctx-error").textContent = `Could not release: ${error.message}`;
  }
});

// ---- metrics --------------------------------------------------------------------------------

let metricsPending = 0;
function scheduleMetrics() {
  clearTimeout(metricsPending);
  metricsPending = window.setTimeout(loadMetrics, 2000);
}

async function loadMetrics() {
  try {
    const { metrics = {} } = await api("/v1/escalations/metrics");
    $("m-error").textContent = "";
    $("m-open").textContent = String(metrics.openNow || 0);
    $("m-oldest").textContent = metrics.openNow ? duration(metrics.oldestWaitingSeconds || 0) : "–";
    const pickup = metrics.timeToPickup || {};
    $("m-p50").textContent = pickup.count ? duration(pickup.p50Seconds || 0) : "–";
    $("m-p90").textContent = pickup.count ? duration(pickup.p90Seconds || 0) : "–";
    $("m-chart").replaceChildren(chart(metrics.byDay || []));
    $("m-priority").replaceChildren(
      ...(metrics.byPriority || []).map((/** @type {any} */ p) =>
        el("li", { "data-priority": (p.priority || "").replace("PRIORITY_", "").toLowerCase() }, [
          el("span", { class: "priority", text: priorityLabel(p.priority) }),
          ` ${p.created || 0} created · ${p.openNow || 0} open · ${p.slaBreached || 0} breached`,
        ])),
    );
  } catch (error) {
    $("m-error").textContent = error.status === 403 ? "" : `Metrics unavailable: ${error.message}`;
  }
}

/** Bars of escalations created per day (byDay has no per-priority split). @param {any[]} days */
function chart(days) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 280;
  const height = 100;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 16}`);
  svg.setAttribute("role", "img");
  const total = days.reduce((n, d) => n + (d.created || 0), 0);
  svg.setAttribute("aria-label", `Escalations created per day: ${total} over ${days.length} days`);
  const max = Math.max(1, ...days.map((d) => d.created || 0));
  const slot = width / Math.max(7, days.length);
  days.forEach((d, i) => {
    const h = ((d.created || 0) / max) * height;
    const bar = document.createElementNS(NS, "rect");
    bar.setAttribute("x", String(i * slot + slot * 0.15));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(slot * 0.7));
    bar.setAttribute("height", String(h));
    bar.setAttribute("class", "bar");
    const title = document.createElementNS(NS, "title");
    title.textContent = `${d.date}: ${d.created || 0} created, ${d.resolved || 0} resolved`;
    bar.append(title);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", String(i * slot + slot / 2));
    label.setAttribute("y", String(height + 12));
    label.setAttribute("text-anchor", "middle");
    label.textContent = (d.date || "").slice(5);
    svg.append(bar, label);
  });
  return svg;
}

$("m-refresh").addEventListener("click", loadMetrics);

// ---- technician: escalate and follow -------------------------------------------------------

function addStep(description = "", outcome = "") {
  const n = $("steps").children.length + 1;
  const remove = el("button", { type: "button", class: "link", text: "Remove" });
  remove.setAttribute("aria-label", `Remove step ${n}`);
  const row = el("li", { class: "step" }, [
    el("label", {}, [`Step ${n} `, el("input", { class: "step-description", value: description, placeholder: "What was tried" })]),
    el("label", {}, ["Outcome ", el("input", { class: "step-outcome", value: outcome, placeholder: "What happened" })]),
    remove,
  ]);
  remove.addEventListener("click", () => row.remove());
  $("steps").append(row);
}

$("add-step").addEventListener("click", () => {
  addStep();
  /** @type {HTMLElement} */ ($("steps").lastElementChild?.querySelector("input"))?.focus();
});

function startTechnician() {
  $("technician").hidden = false;
  if (!$("steps").children.length) addStep();
  connect("/v1/handoffs/stream", onMineEvent, onMineReset);
}

$("escalate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const steps = [...$("steps").querySelectorAll(".step")]
    .map((row) => ({
      description: /** @type {HTMLInputElement} */ (row.querySelector(".step-description")).value.trim(),
      outcome: /** @type {HTMLInputElement} */ (row.querySelector(".step-outcome")).value.trim(),
    }))
    .filter((s) => s.description);
  const body = {
    requestId: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`,
    sessionId: `web-${session?.claims.sub}`,
    intent: "HANDOFF_INTENT_ESCALATE",
    priority: /** @type {HTMLSelectElement} */ ($("esc-priority")).value,
    problemSummary: /** @type {HTMLTextAreaElement} */ ($("esc-summary")).value.trim(),
    stepsTried: steps,
    notes: /** @type {HTMLTextAreaElement} */ ($("esc-notes")).value.trim(),
  };
  $("esc-error").textContent = "";
  try {
    const { handoff } = await api("/v1/handoffs", { method: "POST", body });
    upsertMine(handoff);
    /** @type {HTMLFormElement} */ ($("escalate-form")).reset();
    $("steps").replaceChildren();
    addStep();
    announce("Escalated. Engineers see it now.");
  } catch (error) {
    const fields = ((error.body && error.body.details) || [])
      .flatMap((/** @type {any} */ d) => d.fieldViolations || [])
      .map((/** @type {any} */ v) => `${v.field} ${v.description}`);
    $("esc-error").textContent = `Could not escalate: ${fields.join("; ") || error.message}`;
  }
});

/** @param {any} reset */
function onMineReset(reset) {
  mine.clear();
  $("mine").replaceChildren();
  for (const h of reset.handoffs) upsertMine(h);
}

/** @param {any} event */
function onMineEvent(event) {
  if (!event.handoff || !event.handoff.id) return;
  const before = mine.get(event.handoff.id);
  upsertMine(event.handoff);
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

/** @param {any} h */
function upsertMine(h) {
  if (!h || !h.id) return;
  const merged = { ...mine.get(h.id), ...h };
  mine.set(h.id, merged);
  const { state, text } = statusText(merged);
  const item = el("li", { class: "card mine", "data-id": h.id, "data-status": state }, [
    el("div", { class: "card-head" }, [el("span", { class: "priority", text: priorityLabel(merged.priority) })]),
    el("p", { class: "summary", text: merged.problemSummary || "" }),
    el("p", { class: "status", text }),
  ]);
  const existing = $("mine").querySelector(`[data-id="${CSS.escape(h.id)}"]`);
  if (existing) existing.replaceWith(item);
  else $("mine").prepend(item);
  $("mine-empty").hidden = mine.size > 0;
}

// ---- start ----------------------------------------------------------------------------------

if (document.body.dataset.localMode === "true") $("local-form").hidden = false;
// For debugging from the console (and the browser tests): the live stream handle.
Object.defineProperty(window, "rf", { value: { get stream() { return stream; }, queue, mine } });
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
