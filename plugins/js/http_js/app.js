// One outbound HTTP request from JavaScript (`fetch` over wasi:http), for the #17 tests and
// examples. Config: `{"method": "GET", "url": "...", "headers": {...}, "body": "text",
// "check_status": false}`. Output: `{status, body (text), headers}`. Redirects are returned
// as they are (`redirect: "manual"`), like the Rust and Python helpers; with `check_status`
// an error status is mapped by the SDK's checkStatus (429/503 -> retry after, 4xx -> permanent).
import { exportHandler, checkStatus, Permanent, Retryable, log } from "./tasker-sdk.js"; // copied beside this file by the build

export const handle = exportHandler(async (ctx) => {
  const cfg = ctx.config || {};
  if (typeof cfg.url !== "string" || !cfg.url) throw new Permanent("config field `url` is missing");
  const method = (cfg.method || "GET").toUpperCase();
  const shown = cfg.url.split("?")[0].split("#")[0];
  let resp;
  try {
    resp = await fetch(cfg.url, {
      method,
      headers: cfg.headers || {},
      body: cfg.body == null ? undefined : String(cfg.body),
      redirect: "manual",
    });
  } catch (e) {
    throw new Retryable(`HTTP request to ${shown} failed: ${e && e.message ? e.message : e}`);
  }
  const body = await resp.text();
  log.info(`${method} ${shown} -> ${resp.status} (${body.length} chars)`);
  if (cfg.check_status) checkStatus(resp);
  const headers = {};
  resp.headers.forEach((value, name) => {
    headers[name] = value;
  });
  return { status: resp.status, body, headers };
});
