"""The automation that marks dead flow runs Crashed: created once, with the documented trigger."""

import importlib.util
from datetime import timedelta
from pathlib import Path

from prefect.testing.utilities import prefect_test_harness

SCRIPT = Path(__file__).resolve().parents[2] / "deployments" / "zombie_automation.py"


def _module():
    spec = importlib.util.spec_from_file_location("zombie_automation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_automation_is_created_once_and_crashes_silent_runs():
    z = _module()
    with prefect_test_harness(server_startup_timeout=120):
        assert z.ensure() is True
        assert z.ensure() is False  # idempotent: `make run` calls it every time
        from prefect.automations import Automation

        stored = Automation.read(name=z.NAME)
    trigger = stored.trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.Completed" in trigger.expect and "prefect.flow-run.heartbeat" in trigger.expect
    assert trigger.posture == "Proactive" and trigger.within == timedelta(seconds=z.WITHIN_S)
    (action,) = stored.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"
    assert "resumes from its last checkpoint" in action.message
