"""How a titlegen run ends, shared by the flow (which returns it) and `titlegen.watch` (which reads it).

A model the quality gate blocks is an expected outcome, not a crash: the flow returns a `Failed`
state named `GateBlocked` whose message lists the failed rules. Prefect 3's engine raises that
state's exception when the flow returns and logs it as "Engine execution exited with unexpected
exception" with a traceback, as it does for any failed flow. `gate_blocked()` installs a logging
filter that drops exactly that record for exactly this state, so a blocked run leaves a clean log
(the state, its reasons and the flow's own error line stay). Real failures still log tracebacks.
"""

import logging

from prefect.states import Failed, State

GATE_BLOCKED = "GateBlocked"
GATE_MESSAGE = "Quality gate blocked deployment: "
REASON_SEPARATOR = "; "
# The loggers Prefect's flow engine reports an exception of the finished flow on (flow_engine.run_flow,
# engine.handle_engine_signals).
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.engine")


def gate_message(reasons: list[str]) -> str:
    return GATE_MESSAGE + REASON_SEPARATOR.join(reasons)


def gate_reasons(message: str | None) -> list[str] | None:
    """The failed rules in a GateBlocked state's message; None when it is not one."""
    if not message or not message.startswith(GATE_MESSAGE):
        return None
    return [r for r in message[len(GATE_MESSAGE):].split(REASON_SEPARATOR) if r]


class ExpectedEndFilter(logging.Filter):
    """Drops the engine's traceback record when the exception is the flow's own GateBlocked state."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and gate_reasons(str(exc)) is not None)


def install_expected_end_filter() -> None:
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedEndFilter) for f in logger.filters):
            logger.addFilter(ExpectedEndFilter())


def gate_blocked(reasons: list[str]) -> State:
    """The flow's return value when the gate blocks the model: a red `GateBlocked` state, logged cleanly."""
    install_expected_end_filter()
    return Failed(name=GATE_BLOCKED, message=gate_message(reasons))
