// ResolutionFlow browser stream client: the gateway's SSE streams over fetch + ReadableStream.
//
// Native EventSource cannot send an Authorization header, so this module reads the
// `text/event-stream` body itself. Same semantics as the Python client's resuming iterator:
//   - tracks the last `id` (the per-account sequence) and resumes with `Last-Event-ID`;
//   - reconnects with exponential backoff and jitter on network errors, on `event: error`
//     (except code UNAUTHENTICATED: like a 401, a retry cannot fix an expired token)
//     (the gateway's mid-stream failure frame), on a clean end, and on a dead connection
//     (no bytes for `heartbeatTimeoutMs`: the gateway sends `: ping` comments and the
//     server `event: heartbeat` every 15 s while idle, so 2 x 15 s of silence means dead);
//   - never hands the caller an event whose sequence is not greater than the last one;
//   - surfaces `snapshot` and `reset` (the queue as of a sequence) through `onReset`;
//   - stops cleanly when its AbortSignal fires or `close()` is called: the fetch is aborted,
//     the connection closes and the gateway cancels its upstream gRPC call.
// No dependencies, no build step: `import { openStream } from "/static/stream.js"`.

/**
 * @typedef {Object} StreamEvent  A delta (created, picked_up, released, resolved, ...).
 * @property {string} type          SSE event name, e.g. "created", "picked_up".
 * @property {number} sequence      The event's per-account sequence.
 * @property {any} handoff          The handoff after the change (protobuf JSON mapping).
 * @property {string|undefined} occurredAt
 * @property {any} data             The whole HandoffEvent as parsed JSON.
 */

/**
 * @typedef {Object} ResetEvent  The queue (or the technician's handoffs) as of `sequence`.
 * @property {"snapshot"|"reset"} type
 * @property {number} sequence      The cursor the snapshot was read at.
 * @property {any[]} handoffs       The snapshot's handoffs; replace local state with them.
 * @property {string} reason        Why a reset happened ("" for a first snapshot).
 * @property {any} data
 */

/**
 * @typedef {"connecting"|"open"|"reconnecting"|"closed"|"failed"} StreamState
 */

/**
 * @typedef {Object} StateInfo
 * @property {number} [attempt]     Consecutive failed attempts so far.
 * @property {number} [delayMs]     How long until the next attempt ("reconnecting").
 * @property {Error} [error]        What went wrong.
 */

/**
 * @typedef {Object} StreamOptions
 * @property {string} url                      e.g. "/v1/escalations/stream".
 * @property {string} [token]                  Bearer token.
 * @property {() => (string|Promise<string>)} [getToken]  Called before each connection;
 *     wins over `token`. Lets tokens be refreshed (a 401 asks it once more).
 * @property {number|string|null} [lastEventId]  Resume after this sequence (no snapshot).
 * @property {(event: StreamEvent) => void} [onEvent]
 * @property {(event: ResetEvent) => void} [onReset]
 * @property {(state: StreamState, info: StateInfo) => void} [onState]
 * @property {(sequence: number) => void} [onHeartbeat]
 * @property {AbortSignal} [signal]            Aborting it closes the stream for good.
 * @property {number} [heartbeatTimeoutMs=30000]  Silence after which the connection is dead.
 * @property {number} [initialDelayMs=500]     First reconnect delay (before jitter).
 * @property {number} [maxDelayMs=15000]       Reconnect delay ceiling.
 * @property {typeof fetch} [fetch]            For tests.
 */

/**
 * @typedef {Object} StreamHandle
 * @property {() => void} close                Stop for good (same as aborting `signal`).
 * @property {() => (number|null)} lastEventId The sequence a reconnect resumes after.
 * @property {() => StreamState} state
 * @property {() => number} duplicatesDropped  Events dropped as not newer than the last.
 * @property {Promise<void>} done              Settles when the stream is closed or failed.
 */

/** An HTTP or stream-level failure, with the gateway's error body when there is one. */
export class StreamError extends Error {
  /**
   * @param {string} message
   * @param {number} status  HTTP status (0: network or in-stream failure).
   * @param {any} [body]     `{code, message, details}` from the gateway.
   */
  constructor(message, status, body) {
    super(message);
    this.name = "StreamError";
    this.status = status;
    this.body = body;
    /** Whether the connection it ended had delivered events (a healthy one). */
    this.delivered = false;
  }
}

// Statuses a retry cannot fix: bad cursor, bad or expired token, wrong role, no such route.
const FATAL = new Set([400, 401, 403, 404]);
const CONTROL = new Set(["snapshot", "reset"]);

/**
 * The delay before reconnect attempt `attempt` (1-based): exponential, capped, with jitter
 * (uniform between half and all of it, so a crowd of browsers does not reconnect at once).
 * @param {number} attempt
 * @param {number} initialMs
 * @param {number} maxMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, initialMs, maxMs, random = Math.random) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Splits a growing text buffer into complete SSE frames (separated by a blank line).
 * @param {string} buffer
 * @returns {{frames: string[], rest: string}}
 */
export function splitFrames(buffer) {
  const text = buffer.replace(/\r\n?/g, "\n");
  const parts = text.split("\n\n");
  const rest = parts.pop() ?? "";
  return { frames: parts, rest };
}

/**
 * Parses one SSE frame into its fields (comments dropped; data lines joined by "\n").
 * @param {string} frame
 * @returns {{event: string, data: string|null, id: string|null, retry: number|null, comment: boolean}}
 */
export function parseFrame(frame) {
  let event = "";
  /** @type {string[]} */
  const data = [];
  let id = null;
  let retry = null;
  let comment = false;
  for (const line of frame.split("\n")) {
    if (line === "") continue;
    if (line.startsWith(":")) {
      comment = true;
      continue;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
  }
  return { event, data: data.length ? data.join("\n") : null, id, retry, comment };
}

/**
 * @param {AbortSignal|undefined} signal
 * @param {number} ms
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * @param {any} value
 * @returns {number|null}
 */
function toSequence(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/**
 * Opens a resuming SSE stream. Returns at once; callbacks report what happens.
 * @param {StreamOptions} options
 * @returns {StreamHandle}
 */
export function openStream(options) {
  const {
    url,
    onEvent = () => {},
    onReset = () => {},
    onState = () => {},
    onHeartbeat = () => {},
    heartbeatTimeoutMs = 30000,
    initialDelayMs = 500,
    maxDelayMs = 15000,
  } = options;
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const stopper = new AbortController();
  if (options.signal) {
    if (options.signal.aborted) stopper.abort();
    else options.signal.addEventListener("abort", () => stopper.abort(), { once: true });
  }
  /** @type {number|null} */
  let lastId = toSequence(options.lastEventId);
  /** @type {StreamState} */
  let current = "connecting";
  let duplicates = 0;

  /** @param {StreamState} state @param {StateInfo} [info] */
  function setState(state, info = {}) {
    current = state;
    safely(() => onState(state, info));
  }

  /** @param {() => void} fn */
  function safely(fn) {
    try {
      fn();
    } catch (e) {
      console.error("resolutionflow stream callback failed", e);
    }
  }

  /** @param {boolean} refresh */
  async function currentToken(refresh) {
    if (options.getToken) return await options.getToken();
    return refresh ? null : (options.token ?? null);
  }

  /**
   * Handles one parsed frame. Returns an error when the frame is `event: error`.
   * @param {ReturnType<typeof parseFrame>} frame
   * @returns {{error?: StreamError, delivered: boolean}}
   */
  function handle(frame) {
    if (frame.data === null) return { delivered: false };
    const name = frame.event || "message";
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch {
      data = frame.data;
    }
    if (name === "error") {
      const message = (data && data.message) || "the stream failed";
      // A token that expired or was revoked mid-stream: retrying cannot fix it, so it is
      // reported like the 401 it would get on reconnect (fatal, after one token refresh).
      const status = data && data.code === "UNAUTHENTICATED" ? 401 : 0;
      return { error: new StreamError(message, status, data), delivered: false };
    }
    const sequence = toSequence(frame.id) ?? toSequence(data && data.sequence);
    if (name === "heartbeat") {
      // The position the server-side stream has reached: safe to resume from.
      if (sequence !== null && (lastId === null || sequence > lastId)) lastId = sequence;
      safely(() => onHeartbeat(sequence ?? 0));
      return { delivered: false };
    }
    if (CONTROL.has(name)) {
      // A snapshot restarts the sequence space for this stream (a RESET may even move it
      // backwards, when our cursor was ahead of the log): take it as the new cursor.
      if (sequence !== null) lastId = sequence;
      /** @type {ResetEvent} */
      const reset = {
        type: /** @type {"snapshot"|"reset"} */ (name),
        sequence: sequence ?? 0,
        handoffs: (data && data.snapshot) || [],
        reason: (data && data.resetReason) || "",
        data,
      };
      safely(() => onReset(reset));
      return { delivered: true };
    }
    if (sequence !== null && lastId !== null && sequence <= lastId) {
      duplicates += 1;
      return { delivered: false };
    }
    if (sequence !== null) lastId = sequence;
    /** @type {StreamEvent} */
    const event = {
      type: name,
      sequence: sequence ?? 0,
      handoff: data && data.handoff,
      occurredAt: data && data.occurredAt,
      data,
    };
    safely(() => onEvent(event));
    return { delivered: true };
  }

  /**
   * One connection, until it ends. Resolves with whether it delivered anything; throws
   * what ended it.
   * @param {boolean} refreshToken
   * @returns {Promise<boolean>}
   */
  async function connectOnce(refreshToken) {
    const attempt = new AbortController();
    const abortAttempt = () => attempt.abort();
    stopper.signal.addEventListener("abort", abortAttempt, { once: true });
    let timedOut = false;
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    let watchdog;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        timedOut = true;
        attempt.abort();
      }, heartbeatTimeoutMs);
    };
    let delivered = false;
    try {
      /** @type {Record<string, string>} */
      const headers = { Accept: "text/event-stream" };
      const token = await currentToken(refreshToken);
      if (token) headers.Authorization = `Bearer ${token}`;
      if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
      arm();
      const response = await doFetch(url, {
        headers,
        signal: attempt.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          body = null;
        }
        throw new StreamError(
          (body && body.message) || `HTTP ${response.status}`,
          response.status,
          body,
        );
      }
      if (!response.body) throw new StreamError("the response has no body", response.status);
      setState("open");
      const reader = response.body.getReader();
      // Aborting a real fetch errors its body; cancel the reader too, for any fetch.
      attempt.signal.addEventListener("abort", () => reader.cancel().catch(() => {}), {
        once: true,
      });
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        buffer += decoder.decode(value, { stream: true });
        const { frames, rest } = splitFrames(buffer);
        buffer = rest;
        for (const text of frames) {
          const result = handle(parseFrame(text));
          delivered = delivered || result.delivered;
          if (result.error) {
            reader.cancel().catch(() => {});
            throw result.error;
          }
        }
      }
      throw new StreamError("the stream ended", 0);
    } catch (e) {
      if (timedOut) {
        throw new StreamError(`no data for ${heartbeatTimeoutMs} ms: connection presumed dead`, 0);
      }
      if (e instanceof StreamError) {
        e.delivered = delivered;
        throw e;
      }
      const error = new StreamError(e instanceof Error ? e.message : String(e), 0);
      error.delivered = delivered;
      throw error;
    } finally {
      clearTimeout(watchdog);
      stopper.signal.removeEventListener("abort", abortAttempt);
      attempt.abort(); // releases the connection if it is still open
    }
  }

  async function run() {
    let failures = 0;
    let refreshed = false;
    setState("connecting", { attempt: 0 });
    while (!stopper.signal.aborted) {
      let error;
      try {
        await connectOnce(refreshed);
      } catch (e) {
        error = /** @type {StreamError} */ (e);
      }
      if (stopper.signal.aborted) break;
      if (!error) continue;
      if (error.status === 401 && options.getToken && !refreshed) {
        refreshed = true; // one more try with a fresh token, right away
        continue;
      }
      if (FATAL.has(error.status)) {
        setState("failed", { error, attempt: failures });
        return;
      }
      refreshed = false;
      // A connection that delivered something was healthy: start the backoff over.
      failures = error.delivered ? 1 : failures + 1;
      const delayMs = backoffDelay(failures, initialDelayMs, maxDelayMs);
      setState("reconnecting", { attempt: failures, delayMs, error });
      await sleep(delayMs, stopper.signal);
    }
    setState("closed");
  }

  const done = run();
  return {
    close: () => stopper.abort(),
    lastEventId: () => lastId,
    state: () => current,
    duplicatesDropped: () => duplicates,
    done,
  };
}
