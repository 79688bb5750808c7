// Write a Tasker step handler in JavaScript: JSON in, JSON out.
//
//   import { exportHandler, Permanent, log } from "tasker-sdk";
//
//   export const handle = exportHandler((ctx) => {
//     if (!ctx.config.name) throw new Permanent("config field `name` is missing");
//     log.info(`greeting ${ctx.config.name}`);
//     return { greeting: `hello, ${ctx.config.name}` };
//   });
//
// Errors: throw `Permanent` for input that can never succeed and `Retryable` (optionally
// with `retryAfterMs`) for a transient failure. Anything else thrown is a retryable error
// whose message is "<Error name>: <message>"; its stack is logged at error level.
//
// Outbound HTTP: the global `fetch` (over wasi:http; only to the step's `grants.http`), and
// `checkStatus(response)` to turn an error status into the step's error:
//
//   export const handle = exportHandler(async (ctx) => {
//     const resp = checkStatus(await fetch(url, { headers: { authorization: "Bearer {{secret:API_KEY}}" } }));
//     return await resp.json();
//   });
//
// The bindings (`tasker:plugin/host@0.1.1`, the `handle` export) come from `wit/` when
// componentize-js builds the component (see docs/languages.md).

import { emitEvent, log as hostLog } from "tasker:plugin/host@0.1.1";

/** Base of the handler's own failures. */
export class StepError extends Error {}

/** Never retry: the input cannot succeed. */
export class Permanent extends StepError {
  constructor(message) {
    super(message);
    this.name = "Permanent";
  }
}

/** Try again later; `retryAfterMs` asks the host to wait that long first. */
export class Retryable extends StepError {
  constructor(message, retryAfterMs) {
    super(message);
    this.name = "Retryable";
    this.retryAfterMs = retryAfterMs;
  }
}

function parse(what, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Permanent(`host sent invalid JSON in ${what}: ${e.message}`);
  }
}

/** What one attempt sees, with its JSON fields parsed. */
export class Context {
  constructor(raw) {
    this.taskId = raw.taskId;
    this.stepName = raw.stepName;
    /** 1 for the first attempt. */
    this.attempt = raw.attempt;
    this.context = parse("context", raw.context);
    this.config = parse("config", raw.config);
    /** Results of the parent steps, by step name. */
    this.parents = {};
    for (const [name, text] of raw.parentResults) {
      this.parents[name] = parse(`parent result \`${name}\``, text);
    }
  }

  /** A parent's result; a missing parent is a permanent error. */
  parent(step) {
    if (!(step in this.parents)) throw new Permanent(`no result from parent step \`${step}\``);
    return this.parents[step];
  }
}

/** Log lines recorded on the attempt (the host bounds how many it keeps). */
export const log = {
  trace: (m) => hostLog("trace", String(m)),
  debug: (m) => hostLog("debug", String(m)),
  info: (m) => hostLog("info", String(m)),
  warn: (m) => hostLog("warn", String(m)),
  error: (m) => hostLog("error", String(m)),
};

/** Put a custom event on the task's event bus (as `custom.<name>`). */
export function emit(name, payload) {
  emitEvent(name, JSON.stringify(payload));
}

function toWitError(e) {
  if (e instanceof Permanent) return { tag: "permanent", val: e.message };
  if (e instanceof Retryable) {
    const after = e.retryAfterMs == null ? undefined : BigInt(Math.max(0, Math.floor(e.retryAfterMs)));
    return { tag: "retryable", val: { message: e.message, retryAfterMs: after } };
  }
  const name = e && e.name ? e.name : "Error";
  const message = e && e.message !== undefined ? e.message : String(e);
  try {
    if (e && e.stack) hostLog("error", `${name}: ${message}\n${e.stack}`.slice(0, 8000));
  } catch (_) {
    // Logging is best effort.
  }
  return { tag: "retryable", val: { message: `${name}: ${message}`, retryAfterMs: undefined } };
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds from now, or undefined. */
function retryAfterMs(value) {
  if (value == null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const when = Date.parse(v);
  return Number.isNaN(when) ? undefined : Math.max(0, when - Date.now());
}

/**
 * Return a `fetch` response below 400; otherwise throw what the step should do (as the Rust
 * SDK's `error_for_status`): 429 and 503 are `Retryable` with `retryAfterMs` from
 * `Retry-After` (seconds or an HTTP date), other 5xx are `Retryable`, every other 4xx (400,
 * 401, 403, 404, 422, ...) is `Permanent`. The error has `status` and `url` (no query).
 */
export function checkStatus(response) {
  const status = response.status;
  if (status < 400) return response;
  const url = String(response.url || "").split("#")[0].split("?")[0];
  let message = `HTTP request to ${url || "(unknown URL)"} failed: status ${status}`;
  let error;
  if (status === 429 || (status >= 500 && status < 600)) {
    const after = status === 429 || status === 503 ? retryAfterMs(response.headers.get("retry-after")) : undefined;
    if (after !== undefined) message += ` (retry after ${Math.floor(after / 1000)}s)`;
    error = new Retryable(message, after);
  } else {
    error = new Permanent(message);
  }
  error.status = status;
  error.url = url;
  throw error;
}

function encodeResult(result) {
  let text;
  try {
    text = JSON.stringify(result);
  } catch (e) {
    throw { tag: "permanent", val: `the handler's result is not JSON: ${e.message}` };
  }
  if (text === undefined) {
    throw { tag: "permanent", val: "the handler returned undefined, which is not JSON" };
  }
  return text;
}

/**
 * Wrap `fn(ctx)` as the world's `handle` export: parses the context, encodes the result as
 * JSON and turns exceptions into the WIT `step-error` (thrown: componentize-js maps a throw
 * from a `result`-returning export to its `err` case). `fn` may be async (e.g. to await
 * `fetch`): componentize-js runs the event loop until the returned promise settles.
 */
export function exportHandler(fn) {
  return function handle(raw) {
    let result;
    try {
      result = fn(new Context(raw));
    } catch (e) {
      throw toWitError(e);
    }
    if (result && typeof result.then === "function") {
      return result.then(encodeResult, (e) => {
        throw toWitError(e);
      });
    }
    return encodeResult(result);
  };
}
