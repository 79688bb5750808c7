"""One outbound HTTP request from Python (tasker_sdk.http), for the #17 tests and examples.

Config: `{"method": "GET", "url": "...", "headers": {...}, "body": "text", "check_status":
false, "timeout_ms": null}`. Output: `{"status", "body" (text), "headers"}`. A transport
failure is the SDK's retryable HttpError naming the wasi:http code; with `check_status` an
error status is mapped by `raise_for_status` (429/503 -> retry after, 4xx -> permanent).
"""

import tasker_sdk
from tasker_sdk import Context, Permanent, http


def handle(ctx: Context):
    cfg = ctx.config if isinstance(ctx.config, dict) else {}
    url = cfg.get("url")
    if not isinstance(url, str) or not url:
        raise Permanent("config field `url` is missing")
    resp = http.request(
        cfg.get("method") or "GET",
        url,
        headers=cfg.get("headers") or None,
        body=cfg.get("body"),
        timeout_ms=cfg.get("timeout_ms"),
    )
    tasker_sdk.log.info(f"{resp.method} {resp.url} -> {resp.status} ({len(resp.body)} bytes)")
    if cfg.get("check_status"):
        http.raise_for_status(resp)
    return {"status": resp.status, "body": resp.text(), "headers": resp.headers}


WitWorld = tasker_sdk.export(handle)
