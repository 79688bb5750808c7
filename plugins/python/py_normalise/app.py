"""Polyglot example, step `normalise`: validate and normalise customer payment records
with the standard library only (re, decimal, datetime).

Input: the `ingest` step's result `{batch_id, currency, records: [{row, id, email, country,
amount, date}]}`. Config: `countries` (allowed ISO codes), `flaky_first_attempt` (raise on
attempt 1 to show that an unexpected exception is retried).

Output: the valid records, normalised and sorted by id; the rejected ones with a reason;
and `canonical`, one CSV line per valid record, which later steps checksum.
"""

import re
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import tasker_sdk
from tasker_sdk import Context, Permanent

EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
CENT = Decimal("0.01")


class Rejected(ValueError):
    pass


def parse_email(raw) -> str:
    email = str(raw or "").strip().lower()
    if not EMAIL.match(email):
        raise Rejected(f"email {raw!r} is not an address")
    return email


def parse_country(raw, allowed) -> str:
    code = str(raw or "").strip().upper()
    if allowed and code not in allowed:
        raise Rejected(f"country {raw!r} is not one of {', '.join(sorted(allowed))}")
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise Rejected(f"country {raw!r} is not a two-letter code")
    return code


def parse_amount(raw) -> int:
    """"1,234.5" -> 123450 cents; half-even rounding to the cent."""
    text = str(raw if raw is not None else "").strip().replace(",", "").replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Rejected(f"amount {raw!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise Rejected(f"amount {raw!r} must be positive")
    return int((value.quantize(CENT, rounding=ROUND_HALF_EVEN) * 100).to_integral_value())


def parse_date(raw) -> str:
    text = str(raw or "").strip()
    try:
        if "T" in text or " " in text:
            return datetime.fromisoformat(text).date().isoformat()
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise Rejected(f"date {raw!r} is not an ISO 8601 date") from None


def handle(ctx: Context):
    if ctx.config.get("flaky_first_attempt") and ctx.attempt == 1:
        # Not a Permanent error: the SDK turns it into a retryable one.
        raise ConnectionError("reference data service unavailable")
    batch = ctx.parent("ingest")
    allowed = {c.upper() for c in ctx.config.get("countries", [])}
    valid, rejected, seen = [], [], set()
    for rec in batch["records"]:
        row, rid = rec.get("row"), str(rec.get("id") or "").strip()
        try:
            if not rid:
                raise Rejected("id is missing")
            if rid in seen:
                raise Rejected(f"duplicate id {rid}")
            norm = {
                "id": rid,
                "email": parse_email(rec.get("email")),
                "country": parse_country(rec.get("country"), allowed),
                "amount_cents": parse_amount(rec.get("amount")),
                "date": parse_date(rec.get("date")),
            }
        except Rejected as e:
            rejected.append({"row": row, "id": rid, "reason": str(e)})
            continue
        seen.add(rid)
        valid.append(norm)
    if not valid:
        raise Permanent(f"batch {batch['batch_id']}: no valid records ({len(rejected)} rejected)")
    valid.sort(key=lambda r: r["id"])
    canonical = "".join(
        f"{r['id']},{r['email']},{r['country']},{r['amount_cents']},{r['date']}\n" for r in valid
    )
    tasker_sdk.log.info(f"{len(valid)} valid, {len(rejected)} rejected")
    return {
        "batch_id": batch["batch_id"],
        "currency": batch["currency"],
        "valid": valid,
        "rejected": rejected,
        "canonical": canonical,
    }


WitWorld = tasker_sdk.export(handle)
