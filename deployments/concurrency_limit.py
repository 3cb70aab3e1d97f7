"""Put every titlegen deployment under one global concurrency limit (declared in prefect.yaml).

`concurrency_limit: 1` in prefect.yaml gives each deployment a limit of its own, so `full` and
`full-docker` (which share the weekly schedule) could train at the same time. The Prefect server
can point several deployments at one global concurrency limit (`global_concurrency_limit_id` of a
deployment), but `prefect deploy` cannot say so. This script does it after a deploy: it creates or
updates the limit named in `definitions.shared_concurrency_limit` of prefect.yaml (`titlegen-runs`,
limit 1), points each deployment of prefect.yaml that the server has at it, and deletes the
per-deployment limit (`deployment:<id>`) that `prefect deploy` had made. A redeploy keeps the link
(it only sets the shared limit to the same value). A second run is then queued
(`AwaitingConcurrencySlot`) until the first ends, whichever deployment each came from.

    python deployments/concurrency_limit.py        # idempotent; local_stack.sh and docker_worker.sh run it
"""

import asyncio
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def shared_limit(config: dict) -> tuple[str, int, list[str]]:
    """(limit name, slots, `<flow>/<deployment>` names) from a parsed prefect.yaml."""
    spec = config["definitions"]["shared_concurrency_limit"]
    names = []
    for d in config["deployments"]:
        flow = d["entrypoint"].rsplit(":", 1)[1]
        names.append(f"{flow}/{d['name']}")
    return spec["name"], int(spec["limit"]), names


async def apply(config: dict) -> list[str]:
    """Create/update the limit, link the deployments present; returns the names linked."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name, limit, deployments = shared_limit(config)
    linked = []
    async with get_client() as client:
        try:
            gcl = await client.read_global_concurrency_limit_by_name(name)
            if gcl.limit != limit or not gcl.active:
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        gcl = await client.read_global_concurrency_limit_by_name(name)
        for full_name in deployments:
            try:
                deployment = await client.read_deployment_by_name(full_name)
            except ObjectNotFound:
                continue  # not deployed on this server (full-docker is deployed by the GPU host)
            own = deployment.global_concurrency_limit
            if own is None or own.id != gcl.id:
                response = await client._client.patch(f"/deployments/{deployment.id}", json={"global_concurrency_limit_id": str(gcl.id)})
                response.raise_for_status()
                if own is not None and own.name == f"deployment:{deployment.id}":
                    await client.delete_global_concurrency_limit_by_name(own.name)
            linked.append(full_name)
    return linked


def main() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    name, limit, _ = shared_limit(config)
    linked = asyncio.run(apply(config))
    print(f"global concurrency limit {name!r} ({limit} at a time) shared by: {', '.join(linked) or 'no deployment yet'}")


if __name__ == "__main__":
    main()
    sys.exit(0)
