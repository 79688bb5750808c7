"""Outbound HTTP from a Python handler, over componentize-py's ``wasi:http`` bindings.

Blocking, one request at a time::

    from tasker_sdk import http

    resp = http.request("POST", "https://api.example.com/v1/charges",
                        headers={"authorization": "Bearer {{secret:API_KEY}}"},
                        json={"amount": 100}, timeout_ms=5000)
    http.raise_for_status(resp)   # 429/503 -> Retryable(retry_after_ms), 4xx -> Permanent
    charge = resp.json()

The host lets a request through only if it matches the step's ``grants.http``; it writes
the secret for a ``{{secret:NAME}}`` header value (granted in ``grants.secrets``) itself, so
the handler never sees it. Redirects are not followed: a 3xx is returned as it is.

A request that fails before a response raises an :class:`HttpError` whose message names
the URL (without its query) and the ``wasi:http`` error code, e.g. ``HTTP request to
http://127.0.0.1:8080/v1 failed: HttpRequestDenied``; the same mapping and wording as the
Rust SDK (``tasker_guest_sdk::http``): a refusal (``HttpRequestDenied``,
``DestinationIpProhibited``) or an invalid request is :class:`~tasker_sdk.Permanent`, any
other failure (connection, timeout, body over the byte limit) :class:`~tasker_sdk.Retryable`.
"""

import json as _json
import time
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import monotonic_clock, outgoing_handler, poll, streams
from wit_world.imports import types as http_types

from . import Permanent, Retryable, StepError

__all__ = ["Response", "HttpError", "HttpRetryable", "HttpPermanent", "request", "get", "post", "put", "delete", "secret", "raise_for_status"]

Headers = Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None]

# The output-stream contract: blocking_write_and_flush takes at most 4096 bytes at a time.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024
_MS = 1_000_000  # nanoseconds

_METHODS = {
    "GET": http_types.Method_Get,
    "HEAD": http_types.Method_Head,
    "POST": http_types.Method_Post,
    "PUT": http_types.Method_Put,
    "DELETE": http_types.Method_Delete,
    "CONNECT": http_types.Method_Connect,
    "OPTIONS": http_types.Method_Options,
    "TRACE": http_types.Method_Trace,
    "PATCH": http_types.Method_Patch,
}


# Refused by the grant or never valid: the same next time.
_PERMANENT_CODES = {"HttpRequestDenied", "DestinationIpProhibited", "HttpRequestUriInvalid", "HttpRequestMethodInvalid"}


class HttpError(StepError):
    """A failed request: ``url`` (no query), ``code`` (the wasi:http error code's name, or
    ``"Status"`` from :func:`raise_for_status`, or ``"InvalidRequest"``), ``status``.
    Raised as a subclass of :class:`~tasker_sdk.Permanent` or :class:`~tasker_sdk.Retryable`."""

    url: str = ""
    code: str = ""
    status: Optional[int] = None


class HttpRetryable(HttpError, Retryable):
    def __init__(self, url: str, code: str, message: str, status: Optional[int] = None, retry_after_ms: Optional[int] = None):
        Retryable.__init__(self, message, retry_after_ms)
        self.url, self.code, self.status = url, code, status


class HttpPermanent(HttpError, Permanent):
    def __init__(self, url: str, code: str, message: str, status: Optional[int] = None):
        Permanent.__init__(self, message)
        self.url, self.code, self.status = url, code, status


def _transport(url: str, code: Any) -> HttpError:
    """The error for a wasi:http error code (a variant, or its name)."""
    name, detail = (code, None) if isinstance(code, str) else _code_parts(code)
    message = f"HTTP request to {url} failed: {name}" + (f" ({detail})" if detail else "")
    if name in _PERMANENT_CODES:
        return HttpPermanent(url, name, message)
    return HttpRetryable(url, name, message)


def _invalid(url: str, why: str) -> HttpError:
    return HttpPermanent(url, "InvalidRequest", f"HTTP request to {url} failed: InvalidRequest: {why}")


class Response:
    """A response, its body read in full."""

    __slots__ = ("status", "headers", "header_list", "body", "method", "url")

    def __init__(self, method: str, url: str, status: int, header_list: List[Tuple[str, str]], body: bytes):
        self.method = method
        #: The request URL without its query.
        self.url = url
        self.status = status
        #: Every header as (lower-case name, value), in order.
        self.header_list = header_list
        #: Lower-case name -> value; repeated headers joined with ", ".
        self.headers: Dict[str, str] = {}
        for name, value in header_list:
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    def raise_for_status(self) -> "Response":
        return raise_for_status(self)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.method} {self.url} ({len(self.body)} bytes)>"


def raise_for_status(resp: Response) -> Response:
    """Return ``resp`` below 400; otherwise raise what the step should do (as the Rust SDK's
    ``error_for_status``): 429 and 503 are :class:`~tasker_sdk.Retryable` with
    ``retry_after_ms`` from ``Retry-After`` (seconds or an HTTP date), other 5xx are
    retryable, every other 4xx (400, 401, 403, 404, 422, ...) is :class:`~tasker_sdk.Permanent`.
    """
    status = resp.status
    if status < 400:
        return resp
    message = f"HTTP request to {resp.url} failed: status {status}"
    if status == 429 or 500 <= status < 600:
        after = _retry_after_ms(resp.header("retry-after")) if status in (429, 503) else None
        if after is not None:
            message += f" (retry after {after // 1000}s)"
        raise HttpRetryable(resp.url, "Status", message, status, after)
    raise HttpPermanent(resp.url, "Status", message, status)


def get(url: str, **kwargs) -> Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs) -> Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs) -> Response:
    return request("PUT", url, **kwargs)


def delete(url: str, **kwargs) -> Response:
    return request("DELETE", url, **kwargs)


def secret(name: str) -> str:
    """The placeholder ``{{secret:NAME}}`` for a host-held secret, to put in a header value."""
    return "{{secret:" + name + "}}"


def request(
    method: str,
    url: str,
    headers: Headers = None,
    body: Union[bytes, bytearray, str, None] = None,
    timeout_ms: Optional[int] = None,
    json: Any = None,
) -> Response:
    """Send one request and read the whole response.

    ``headers``: a mapping or (name, value) pairs. ``body``: bytes or text (UTF-8); or
    ``json=``, encoded with ``content-type: application/json`` unless one is given.
    ``timeout_ms`` bounds connecting, the first byte, each later chunk and the whole call
    (the host's ``limits.http_timeout_ms`` and the attempt's deadline apply as well).
    """
    method = str(method).upper()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise _invalid(_redact(url), "not an http(s) URL")
    if "@" in parts.netloc:
        raise _invalid(_redact(url), "credentials in a URL are not sent: use a header")
    shown = f"{scheme}://{parts.netloc}{parts.path or '/'}"

    pairs = _header_pairs(headers)
    if json is not None:
        if body is not None:
            raise _invalid(shown, "give `body` or `json`, not both")
        body = _json.dumps(json, separators=(",", ":"))
        if not any(n == "content-type" for n, _ in pairs):
            pairs.append(("content-type", b"application/json"))
    data = body.encode("utf-8") if isinstance(body, str) else (bytes(body) if body is not None else None)
    if data is not None and not any(n == "content-length" for n, _ in pairs):
        # Without it the body goes chunked, which many small servers cannot read.
        pairs.append(("content-length", str(len(data)).encode()))
    try:
        fields = http_types.Fields.from_list(pairs)
    except Err as e:
        raise _invalid(shown, f"bad header ({_code_parts(e.value)[0]})") from None

    req = http_types.OutgoingRequest(fields)
    req.set_method(_METHODS[method]() if method in _METHODS else http_types.Method_Other(method))
    req.set_scheme(http_types.Scheme_Https() if scheme == "https" else http_types.Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    out_body = req.body()

    deadline = None
    options = None
    if timeout_ms is not None:
        ns = max(1, int(timeout_ms)) * _MS
        deadline = monotonic_clock.now() + ns
        options = http_types.RequestOptions()
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout, options.set_between_bytes_timeout):
            try:
                setter(ns)
            except Err:
                pass  # not supported by this host: the overall deadline still holds

    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        raise _transport(shown, e.value) from None

    with future:
        with future.subscribe() as ready:
            write_error = _send_body(out_body, data)
            _wait(ready, deadline, shown)
            got = future.get()
        if got is None or isinstance(got, Err):
            raise _transport(shown, http_types.ErrorCode_InternalError("response already taken"))
        inner = got.value
        if isinstance(inner, Err):
            raise _transport(shown, inner.value) from None
        if write_error is not None:
            raise _transport(shown, write_error)
        with inner.value as resp:
            status = resp.status()
            with resp.headers() as fields:
                header_list = [(n.lower(), v.decode("utf-8", errors="replace")) for n, v in fields.entries()]
            payload = _read_body(resp, deadline, shown)
    return Response(method, shown, status, header_list, payload)


def _send_body(out_body: "http_types.OutgoingBody", data: Optional[bytes]) -> Any:
    """Write and finish the body; a failure is returned, to report after the response's own
    error (a refused request breaks the body stream too)."""
    try:
        if data:
            with out_body.write() as stream:
                for i in range(0, len(data), _WRITE_CHUNK):
                    stream.blocking_write_and_flush(data[i : i + _WRITE_CHUNK])
        http_types.OutgoingBody.finish(out_body, None)
    except Err as e:
        return _stream_error(e.value) if _is_stream_error(e.value) else e.value
    return None


def _read_body(resp: "http_types.IncomingResponse", deadline: Optional[int], url: str) -> bytes:
    chunks: List[bytes] = []
    try:
        body = resp.consume()
    except Err:
        return b""
    with body:
        with body.stream() as stream:
            with stream.subscribe() as ready:
                while True:
                    try:
                        chunk = stream.read(_READ_CHUNK)
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        raise _transport(url, _stream_error(e.value)) from None
                    if chunk:
                        chunks.append(chunk)
                    else:
                        _wait(ready, deadline, url)
    return b"".join(chunks)


def _wait(ready: "poll.Pollable", deadline: Optional[int], url: str) -> None:
    if deadline is None:
        ready.block()
        return
    left = deadline - monotonic_clock.now()
    if left > 0:
        with monotonic_clock.subscribe_duration(left) as timer:
            if 0 in poll.poll([ready, timer]):
                return
    raise _transport(url, "HttpResponseTimeout")


def _is_stream_error(value: Any) -> bool:
    return isinstance(value, (streams.StreamError_Closed, streams.StreamError_LastOperationFailed))


def _stream_error(value: Any) -> Any:
    """The wasi:http code behind a stream failure (a body over the limit, a reset)."""
    if isinstance(value, streams.StreamError_LastOperationFailed):
        code = http_types.http_error_code(value.value)
        if code is not None:
            return code
        return http_types.ErrorCode_InternalError(value.value.to_debug_string())
    return "ConnectionTerminated"


def _code_parts(code: Any) -> Tuple[str, Optional[str]]:
    """`ErrorCode_HttpResponseBodySize(10)` -> ("HttpResponseBodySize", "10 bytes"): the
    name and detail the Rust SDK prints."""
    name = type(code).__name__
    name = name.split("_", 1)[1] if "_" in name else name
    payload = getattr(code, "value", None)
    detail = None
    if name in ("HttpRequestBodySize", "HttpResponseBodySize") and isinstance(payload, int):
        detail = f"{payload} bytes"
    elif isinstance(payload, str):
        detail = payload
    elif name == "TlsAlertReceived" and payload is not None:
        detail = payload.alert_message
    elif name == "DnsError" and payload is not None and (payload.rcode is not None or payload.info_code is not None):
        info = "-" if payload.info_code is None else str(payload.info_code)
        detail = f"rcode {payload.rcode or '-'}, info code {info}"
    return name, detail


def _header_pairs(headers: Headers) -> List[Tuple[str, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for name, value in items:
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        else:
            raw = str(value).encode("utf-8")
        pairs.append((str(name).lower(), raw))
    return pairs


def _retry_after_ms(value: Optional[str]) -> Optional[int]:
    """`Retry-After` as seconds or an HTTP date, in milliseconds from now."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0, int((when.timestamp() - time.time()) * 1000))


def _redact(url: str) -> str:
    """A URL for a message: no query, no credentials."""
    head = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in head and "@" in head.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = head.split("://", 1)
        host = rest.split("/", 1)
        head = f"{scheme}://{host[0].rsplit('@', 1)[1]}" + (f"/{host[1]}" if len(host) > 1 else "")
    return head
