"""Create (once) the automation that marks dead titlegen flow runs `Crashed`.

A flow run whose process dies with its machine (power loss, OOM kill, `kill -9`) stays `Running`
on the server forever: nothing reports its end. Flow runs started by a worker send a heartbeat
event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (the local stack sets 60); this
automation marks a run `Crashed` when no heartbeat and no final state arrived within
`WITHIN_S` seconds of the last heartbeat, as Prefect's guide "detect zombie flows" describes.

    python deployments/zombie_automation.py      # idempotent: prints whether it created it
"""

import sys
from datetime import timedelta

NAME = "titlegen: crash flow runs that stopped sending heartbeats"
WITHIN_S = 300  # five missed 60 s heartbeats


def build():
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=NAME,
        description="Marks a flow run Crashed when its heartbeats stop (its process died); see deployments/zombie_automation.py.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=WITHIN_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {WITHIN_S} s: the flow run's process died. Run the deployment again; "
                "finished stages are cache hits and fine-tuning resumes from its last checkpoint.",
            )
        ],
    )


def ensure() -> bool:
    """Create the automation unless one of that name exists; True when it was created."""
    from prefect.automations import Automation

    try:
        Automation.read(name=NAME)
        return False
    except ValueError:
        build().create()
        return True


if __name__ == "__main__":
    created = ensure()
    print(("created" if created else "already present") + f": automation {NAME!r}")
    sys.exit(0)
