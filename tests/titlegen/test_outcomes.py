"""titlegen.outcomes: GateBlocked is a clean, red end; other failures keep their traceback."""

import logging

import pytest
from prefect.states import Failed

from titlegen.outcomes import ExpectedEndFilter, GATE_BLOCKED, gate_blocked, gate_message, gate_reasons


def test_gate_blocked_is_a_red_state_whose_reasons_read_back():
    state = gate_blocked(["ROUGE-L ≥ min_rouge_l: 0.14 < required 0.25", "headline check failures 0.2 > allowed 0.1"])
    assert state.is_failed() and state.name == GATE_BLOCKED
    assert gate_reasons(state.message) == ["ROUGE-L ≥ min_rouge_l: 0.14 < required 0.25", "headline check failures 0.2 > allowed 0.1"]
    assert gate_reasons("Flow run encountered an exception.") is None and gate_reasons(None) is None


def _record(exc: BaseException | None) -> logging.LogRecord:
    return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Engine execution exited with unexpected exception",
                             None, (type(exc), exc, None) if exc else None)


def test_the_filter_drops_only_the_gate_blocked_traceback():
    from prefect.exceptions import FailedRun

    f = ExpectedEndFilter()
    assert not f.filter(_record(FailedRun(gate_message(["rule"]))))
    assert f.filter(_record(FailedRun("Flow run encountered an exception. ValueError: bad")))
    assert f.filter(_record(RuntimeError("boom")))
    assert f.filter(_record(None))


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow  # a Prefect test server (15-40 s here)
def test_a_flow_that_returns_gate_blocked_leaves_no_unexpected_exception_in_the_engine_log():
    """What a worker's flow-run process does (prefect.engine): run_flow with the flow run's logger as error_logger."""
    from prefect import flow
    from prefect.flow_engine import run_flow
    from prefect.testing.utilities import prefect_test_harness

    @flow(name="blocked")
    def blocked():
        return gate_blocked(["ROUGE-L ≥ min_rouge_l: 0.1 < required 0.25"])

    @flow(name="broken")
    def broken():
        return Failed(message="a real failure")

    engine_log = logging.getLogger("prefect.flow_runs")
    handler = _Collect()
    engine_log.addHandler(handler)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            with pytest.raises(Exception, match="Quality gate blocked"):
                run_flow(blocked, error_logger=engine_log)
            assert not [r for r in handler.records if "unexpected exception" in r.getMessage()]
            with pytest.raises(Exception, match="a real failure"):
                run_flow(broken, error_logger=engine_log)
            assert [r for r in handler.records if "unexpected exception" in r.getMessage() and r.exc_info]
    finally:
        engine_log.removeHandler(handler)
