"""Create or update the Docker work pool `titlegen-docker`, with the settings of a `.env` file wired in.

A Docker worker starts each flow run in a fresh container of `titlegen-train:latest`; the
container sees only the environment the work pool and the deployment give it. This script reads
`.env` (see `.env.example`) and puts each variable into the pool's default `env`:

- plain settings (`HF_ORG`, `OLLAMA_HOST`, ...) as their values;
- secrets (a name containing TOKEN, SECRET, PASSWORD or KEY, e.g. `HF_TOKEN`) as Prefect Secret
  blocks named `titlegen-<name>` (`titlegen-hf-token`), referenced from the pool as
  `{{ prefect.blocks.secret.titlegen-hf-token }}`. The worker resolves the reference when it
  starts a container, so the value never appears in the pool, the deployment, a parameter or a log.

Run it once on any machine that reaches the Prefect server (deployments/docker_worker.sh does):

    PREFECT_API_URL=http://<server>:4200/api python deployments/docker_pool.py --env-file .env

Needs `prefect-docker` (the Docker pool's job template comes from it, not from the network).
"""

import argparse
import asyncio
from pathlib import Path

POOL = "titlegen-docker"
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")


def is_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def secret_block_name(name: str) -> str:
    """`HF_TOKEN` -> `titlegen-hf-token` (block names allow lowercase letters, digits and dashes)."""
    return "titlegen-" + name.lower().replace("_", "-")


def pool_env(values: dict[str, str | None]) -> dict[str, str]:
    """The pool's default container env: plain values as they are, secrets as block references."""
    env = {}
    for name, value in values.items():
        if value is None or value == "":
            continue  # an unset line in .env (`HF_TOKEN=`) stays unset in the container
        if name.startswith("PREFECT_"):
            continue  # the Docker worker gives each container the API URL it can reach
        env[name] = "{{ prefect.blocks.secret.%s }}" % secret_block_name(name) if is_secret(name) else value
    return env


def base_job_template(env: dict[str, str]) -> dict:
    """prefect-docker's default Docker job template with `env` as the default of the env variable."""
    from prefect_docker.worker import DockerWorker

    template = DockerWorker.get_default_base_job_template()
    template["variables"]["properties"]["env"]["default"] = env
    return template


async def apply(env_file: Path | None, pool: str) -> dict[str, str]:
    """Save the secrets as blocks, create or update the pool; returns the pool's env (no secret values)."""
    from dotenv import dotenv_values
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    values = dict(dotenv_values(env_file)) if env_file and env_file.exists() else {}
    for name, value in values.items():
        if value and is_secret(name):
            await Secret(value=value).save(secret_block_name(name), overwrite=True)
    env = pool_env(values)
    template = base_job_template(env)
    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
            await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="docker", base_job_template=template))
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="dotenv file to read (default .env; absent = no env)")
    parser.add_argument("--pool", default=POOL, help=f"work pool name (default {POOL})")
    args = parser.parse_args(argv)
    env = asyncio.run(apply(args.env_file, args.pool))
    shown = ", ".join(f"{k}={'<secret block>' if is_secret(k) else v}" for k, v in env.items()) or "none"
    print(f"work pool {args.pool} ready; container env from {args.env_file}: {shown}")


if __name__ == "__main__":
    main()
