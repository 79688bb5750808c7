"""Hostile Python guest for the sandbox tests: config `{"attack": ...}` picks one attack.

- `loop`: spin forever (timeout, or out_of_fuel with a small budget)
- `memory`: allocate 1 MiB blocks until something gives (out_of_memory)
- `read`: read `config.paths` and return their text (capability_denied outside the grants)
- `raise`: raise through the SDK (a retryable handler error, as the SDK promises)
- `retry_later`: not an attack: the SDK's `Retryable` with a server-requested delay
- `panic`: raise past the SDK, out of the component's export (a trap)
"""

import json

import tasker_sdk
from tasker_sdk import Context


def attack(ctx: Context):
    kind = ctx.config.get("attack")
    if kind == "loop":
        x = 0
        while True:
            x += 1
    if kind == "memory":
        hoard = []
        while True:
            block = bytearray(1 << 20)
            block[::4096] = b"\xa5" * len(block[::4096])  # touch every page
            hoard.append(block)
    if kind == "read":
        stolen = []
        for path in ctx.config["paths"]:
            with open(path) as f:
                stolen.append(f.read())
        return stolen
    if kind == "retry_later":
        raise tasker_sdk.Retryable("rate limited", retry_after_ms=ctx.config["retry_after_ms"])
    if kind == "raise":
        raise RuntimeError(f"boom: the guest gave up on attempt {ctx.attempt}")
    raise tasker_sdk.Permanent(f"unknown attack {kind!r}")


class WitWorld:
    def handle(self, raw) -> str:
        if json.loads(raw.config).get("attack") == "panic":
            raise RuntimeError(f"boom: uncaught on attempt {raw.attempt}")
        return tasker_sdk.run(attack, raw)
