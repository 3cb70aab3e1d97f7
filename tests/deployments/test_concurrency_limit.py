"""deployments/concurrency_limit.py on a real Prefect server: `full` and `full-docker` share one limit.

The deployments are registered through the API the way `prefect deploy` registers them (each with
`concurrency_limit: 1` from prefect.yaml, so each gets a limit of its own), then linked. A run of
`full` that holds the slot makes a run of `full-docker` wait (`AwaitingConcurrencySlot`), and a
redeploy keeps the link.
"""

import asyncio
import importlib.util
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("concurrency_limit", ROOT / "deployments" / "concurrency_limit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prefect_yaml_declares_one_shared_limit_for_every_deployment(script):
    name, limit, deployments = script.shared_limit(CONFIG)
    assert (name, limit) == ("titlegen-runs", 1)
    assert deployments == ["titlegen/full", "titlegen/full-docker"]
    assert all(d["concurrency_limit"] == limit for d in CONFIG["deployments"])


async def _deploy(client, flow_id, name: str):
    """What `prefect deploy` sends for a deployment of prefect.yaml (the parts that matter here)."""
    return await client.create_deployment(flow_id=flow_id, name=name, concurrency_limit=1, enforce_parameter_schema=True)


@pytest.mark.slow  # a Prefect test server: ~45 s here
def test_runs_of_both_deployments_queue_on_the_one_limit(script):
    from prefect import get_client
    from prefect.states import Pending

    async def scenario():
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("titlegen")
            ids = {name: await _deploy(client, flow_id, name) for name in ("full", "full-docker")}
            own_limits = {(await client.read_deployment(i)).global_concurrency_limit.name for i in ids.values()}
            linked = await script.apply(CONFIG)
            limits = {name: (await client.read_deployment(i)).global_concurrency_limit for name, i in ids.items()}
            first = await client.create_flow_run_from_deployment(ids["full"])
            second = await client.create_flow_run_from_deployment(ids["full-docker"])
            r1 = await client.set_flow_run_state(first.id, Pending())
            r2 = await client.set_flow_run_state(second.id, Pending())
            # A redeploy of either (prefect deploy again) must not split them apart.
            await _deploy(client, flow_id, "full-docker")
            after = (await client.read_deployment(ids["full-docker"])).global_concurrency_limit
            remaining = {g.name for g in await client.read_global_concurrency_limits(limit=50, offset=0)}
            return own_limits, linked, limits, r1, r2, after, remaining

    with prefect_test_harness(server_startup_timeout=180):
        own_limits, linked, limits, r1, r2, after, remaining = asyncio.run(scenario())

    assert len(own_limits) == 2, "prefect deploy alone gives each deployment a limit of its own"
    assert linked == ["titlegen/full", "titlegen/full-docker"]
    assert {g.name for g in limits.values()} == {"titlegen-runs"} and {g.limit for g in limits.values()} == {1}
    assert r1.state.is_pending(), r1
    assert r2.state.name == "AwaitingConcurrencySlot", r2  # full-docker waits for full's run
    assert after.name == "titlegen-runs" and after.limit == 1
    assert remaining == {"titlegen-runs"}, "the per-deployment limits are deleted"
