#!/usr/bin/env python3
"""A small shop API for the `http` example (scripts/example.sh http). Standard library only.

    EXAMPLE_API_TOKEN=... python3 examples/http/api.py --port-file FILE [--port N]

Listens on 127.0.0.1 (port 0 = any free one), writes the port to FILE once it accepts
connections and logs one line per request to stdout. Every /v1 request needs
`Authorization: Bearer $EXAMPLE_API_TOKEN` (401 otherwise):

    GET  /v1/products/{id}   the catalogue entry (404 for an unknown id)
    POST /v1/quotes          {"items": [{"product_id", "qty"}]} -> 201 a priced quote
    POST /v1/charges         {"quote_id", "amount_cents"} with an Idempotency-Key header:
                             rate limited, the first call per key gets 429 + Retry-After: 1,
                             the next 201 the charge, later ones 200 the same charge
    GET  /v1/charges/{id}    a charge made before
"""

import argparse
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRODUCTS = {
    "p-100": {"name": "Espresso beans, 1 kg", "unit_price_cents": 2450, "stock": 40},
    "p-200": {"name": "Hand grinder", "unit_price_cents": 8900, "stock": 3},
    "p-300": {"name": "Milk jug", "unit_price_cents": 1275, "stock": 0},
}
SHIPPING_CENTS = 495
FREE_SHIPPING_FROM_CENTS = 10000
TAX_PERCENT = 19

lock = threading.Lock()
quotes = {}  # quote_id -> quote
charges = {}  # charge_id -> charge
by_key = {}  # idempotency key -> charge_id, or None after the 429
log_file = sys.stdout


def log(line):
    with lock:
        print(time.strftime("%H:%M:%S"), line, file=log_file, flush=True)


class Api(BaseHTTPRequestHandler):
    server_version = "shop-api/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass  # one line per request from reply() instead, without the headers

    def reply(self, status, body, headers=(), note=""):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        log(f"{self.command} {self.path} -> {status}{' ' + note if note else ''}")

    def error(self, status, message, headers=(), note=""):
        self.reply(status, {"error": message}, headers, note or message)

    def authorized(self):
        expected = "Bearer " + os.environ["EXAMPLE_API_TOKEN"]
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        # The token is never logged, right or wrong.
        why = "no Authorization header" if not given else "wrong token"
        self.error(401, "unauthorized", [("WWW-Authenticate", "Bearer")], why)
        return False

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1 << 20:
            raise ValueError("body over 1 MiB")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ValueError("body is not a JSON object")
        return body

    def do_GET(self):
        if not self.authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "products"]:
            product = PRODUCTS.get(parts[2])
            if product is None:
                return self.error(404, f"no product {parts[2]}")
            return self.reply(200, {"id": parts[2], "currency": "EUR", **product})
        if len(parts) == 3 and parts[:2] == ["v1", "charges"]:
            with lock:
                charge = charges.get(parts[2])
            if charge is None:
                return self.error(404, f"no charge {parts[2]}")
            return self.reply(200, charge)
        self.error(404, "no such resource")

    def do_POST(self):
        if not self.authorized():
            return
        try:
            body = self.body()
        except ValueError as e:
            return self.error(400, str(e))
        path = self.path.split("?")[0]
        if path == "/v1/quotes":
            return self.quote(body)
        if path == "/v1/charges":
            return self.charge(body)
        self.error(404, "no such resource")

    def quote(self, body):
        lines = []
        for item in body.get("items") or []:
            product = PRODUCTS.get(item.get("product_id"))
            qty = item.get("qty")
            if product is None:
                return self.error(422, f"unknown product {item.get('product_id')!r}")
            if not isinstance(qty, int) or qty < 1:
                return self.error(422, f"qty of {item['product_id']} must be a positive integer")
            lines.append({
                "product_id": item["product_id"],
                "qty": qty,
                "unit_price_cents": product["unit_price_cents"],
                "line_cents": qty * product["unit_price_cents"],
            })
        if not lines:
            return self.error(422, "a quote needs at least one item")
        subtotal = sum(line["line_cents"] for line in lines)
        shipping = 0 if subtotal >= FREE_SHIPPING_FROM_CENTS else SHIPPING_CENTS
        tax = (subtotal + shipping) * TAX_PERCENT // 100
        with lock:
            quote_id = f"q-{len(quotes) + 1:04d}"
            quote = {
                "quote_id": quote_id,
                "currency": "EUR",
                "lines": lines,
                "subtotal_cents": subtotal,
                "shipping_cents": shipping,
                "tax_cents": tax,
                "total_cents": subtotal + shipping + tax,
            }
            quotes[quote_id] = quote
        self.reply(201, quote, note=f"{quote_id} total {quote['total_cents']} cents")

    def charge(self, body):
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self.error(400, "an Idempotency-Key header is required")
        with lock:
            quote = quotes.get(body.get("quote_id"))
            if quote is None:
                return self.error(422, f"unknown quote {body.get('quote_id')!r}")
            if body.get("amount_cents") != quote["total_cents"]:
                return self.error(422, f"amount_cents must be the quote's total {quote['total_cents']}")
            replay = False
            if key not in by_key:
                # The rate limiter: every new key waits one second first.
                by_key[key] = None
                rate_limited = True
            else:
                rate_limited = False
                charge_id = by_key[key]
                replay = charge_id is not None
                if not replay:
                    charge_id = f"ch-{len(charges) + 1:04d}"
                    charges[charge_id] = {
                        "charge_id": charge_id,
                        "status": "succeeded",
                        "quote_id": quote["quote_id"],
                        "amount_cents": quote["total_cents"],
                        "currency": quote["currency"],
                    }
                    by_key[key] = charge_id
                charge = charges[charge_id]
        if rate_limited:
            return self.error(429, "rate limited, retry later", [("Retry-After", "1")],
                              f"rate limited (first call for key {key}), Retry-After: 1")
        if replay:
            return self.reply(200, charge, note=f"{charge_id} replayed for key {key}")
        self.reply(201, charge, note=f"{charge_id} {charge['amount_cents']} cents for key {key}")


def watch_parent(parent):
    # Ends with the script that started it, even when that one was killed with SIGKILL.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main():
    global log_file
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 (the default): any free port")
    p.add_argument("--port-file", required=True, help="written with the port once listening")
    p.add_argument("--log", help="the request log (default: stdout)")
    args = p.parse_args()
    if not os.environ.get("EXAMPLE_API_TOKEN"):
        sys.exit("api.py: set EXAMPLE_API_TOKEN")
    if args.log:
        log_file = open(args.log, "a", buffering=1)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Api)
    server.daemon_threads = True
    port = server.server_address[1]
    # Bound and listening already: write the file in one rename so a reader never sees half.
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)
    log(f"shop API listening on http://127.0.0.1:{port}")
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
