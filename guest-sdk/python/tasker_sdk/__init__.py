"""Write a Tasker step handler in Python: JSON in, JSON out.

A handler is a function taking a :class:`Context` and returning any JSON-serialisable
value. Export it as the component's world class::

    import tasker_sdk
    from tasker_sdk import Context, Permanent

    def handle(ctx: Context):
        name = ctx.config.get("name")
        if not name:
            raise Permanent("config field `name` is missing")  # never retried
        tasker_sdk.log.info(f"greeting {name}")
        return {"greeting": f"hello, {name}"}

    WitWorld = tasker_sdk.export(handle)

Errors: raise :class:`Permanent` for input that can never succeed and :class:`Retryable`
(optionally with ``retry_after_ms``) for a transient failure. Any other exception is a
retryable error whose message is ``"<ExceptionType>: <message>"``; its traceback is logged at
error level. ``MemoryError`` is not caught: the attempt then fails and the host reports it as
``out_of_memory``.

Outbound HTTP: :mod:`tasker_sdk.http` (``tasker_sdk.http.request("GET", url)``), allowed only
to the URLs in the step's ``grants.http``.

The ``wit_world`` bindings are generated from ``wit/`` by ``componentize-py`` when the
component is built (see docs/languages.md); nothing generated is checked in.
"""

import json
import traceback
from typing import Any, Callable, Dict, Optional

from componentize_py_types import Err
# Built with `--import-interface-name`: tasker:plugin/types is `tasker_types` (wasi:http's
# `types` keeps the plain name, see scripts/build-polyglot.sh).
from wit_world.imports import host
from wit_world.imports import tasker_types as types

__all__ = [
    "Context",
    "StepError",
    "Permanent",
    "Retryable",
    "export",
    "emit",
    "log",
    "http",
]


class StepError(Exception):
    """Base of the handler's own failures."""


class Permanent(StepError):
    """Never retry: the input cannot succeed."""


class Retryable(StepError):
    """Try again later; ``retry_after_ms`` asks the host to wait that long first."""

    def __init__(self, message: str, retry_after_ms: Optional[int] = None):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Context:
    """What one attempt sees, with its JSON fields parsed."""

    __slots__ = ("task_id", "step_name", "attempt", "context", "parents", "config")

    def __init__(self, raw: "types.StepContext"):
        self.task_id: str = raw.task_id
        self.step_name: str = raw.step_name
        #: 1 for the first attempt.
        self.attempt: int = raw.attempt
        #: The task's context.
        self.context: Any = _parse("context", raw.context)
        #: The step's handler config from the template.
        self.config: Any = _parse("config", raw.config)
        #: Results of the parent steps, by step name.
        self.parents: Dict[str, Any] = {
            name: _parse(f"parent result `{name}`", text) for name, text in raw.parent_results
        }

    def parent(self, step: str) -> Any:
        """A parent's result; a missing parent is a permanent error."""
        if step not in self.parents:
            raise Permanent(f"no result from parent step `{step}`")
        return self.parents[step]


def _parse(what: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise Permanent(f"host sent invalid JSON in {what}: {e}") from None


class _Log:
    """Log lines recorded on the attempt (the host bounds how many it keeps)."""

    def trace(self, message: str) -> None:
        host.log(types.LogLevel.TRACE, message)

    def debug(self, message: str) -> None:
        host.log(types.LogLevel.DEBUG, message)

    def info(self, message: str) -> None:
        host.log(types.LogLevel.INFO, message)

    def warn(self, message: str) -> None:
        host.log(types.LogLevel.WARN, message)

    def error(self, message: str) -> None:
        host.log(types.LogLevel.ERROR, message)


log = _Log()


def emit(name: str, payload: Any) -> None:
    """Put a custom event on the task's event bus (as ``custom.<name>``)."""
    host.emit_event(name, json.dumps(payload, separators=(",", ":")))


def _wit_error(e: BaseException) -> "types.StepError":
    if isinstance(e, Permanent):
        return types.StepError_Permanent(str(e))
    if isinstance(e, Retryable):
        after = e.retry_after_ms
        after = None if after is None else max(0, int(after))
        return types.StepError_Retryable(types.RetryableError(str(e), after))
    # Unexpected exceptions: retryable, with where it happened in the attempt's logs.
    try:
        host.log(types.LogLevel.ERROR, "".join(traceback.format_exception(e))[-8000:])
    except Exception:
        pass
    return types.StepError_Retryable(types.RetryableError(f"{type(e).__name__}: {e}", None))


def run(fn: Callable[[Context], Any], raw: "types.StepContext") -> str:
    """Call ``fn`` for one attempt and encode its result; raises ``Err(step-error)``."""
    try:
        result = fn(Context(raw))
    except MemoryError:
        raise
    except Exception as e:
        raise Err(_wit_error(e))
    try:
        return json.dumps(result, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Err(types.StepError_Permanent(f"the handler's result is not JSON: {e}"))


def export(fn: Callable[[Context], Any]) -> type:
    """The world class componentize-py looks for: assign it to ``WitWorld`` in your app."""

    class WitWorld:
        def handle(self, ctx: "types.StepContext") -> str:
            return run(fn, ctx)

    WitWorld.__doc__ = f"Tasker step handler `{getattr(fn, '__name__', 'handler')}`."
    return WitWorld


# Last: the HTTP helper raises the error classes above.
from . import http  # noqa: E402
