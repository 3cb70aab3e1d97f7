"""Binds every deployment in prefect.yaml to the `titlegen` flow, so deployment config cannot drift from code.

Each deployment's entrypoint must load the flow, every parameter it (or one of its schedules)
sets must exist in the flow's signature, be a top-level scalar, and validate both against the
flow's parameter schema (what the server enforces when a run is created) and against
`TitlegenParams`. The Docker deployment's job variables must fit prefect-docker's work pool schema.
"""

from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from titlegen.params import TitlegenParams

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in CONFIG["deployments"]}


@pytest.fixture(scope="module")
def flow():
    return load_flow_from_entrypoint(str(ROOT / "flows" / "titlegen.py") + ":titlegen")


@pytest.fixture(scope="module")
def schema(flow):
    return parameter_schema(flow).model_dump_for_openapi()


def _parameter_sets(deployment: dict) -> list[tuple[str, dict]]:
    sets = [("parameters", deployment.get("parameters") or {})]
    for i, schedule in enumerate(deployment.get("schedules") or []):
        sets.append((f"schedules[{i}].parameters", {**sets[0][1], **(schedule.get("parameters") or {})}))
    return sets


def test_prefect_yaml_is_what_prefect_deploy_reads():
    model = PrefectYamlModel.model_validate(CONFIG)
    assert {d.name for d in model.deployments} == {"full", "full-docker"}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_loads_the_titlegen_flow(name):
    entrypoint = DEPLOYMENTS[name]["entrypoint"]
    path, func = entrypoint.split(":")
    loaded = load_flow_from_entrypoint(f"{ROOT / path}:{func}")
    assert loaded.name == "titlegen"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_parameters_bind_to_the_flow_signature(name, flow, schema):
    deployment = DEPLOYMENTS[name]
    assert deployment["enforce_parameter_schema"] is True, "runs must be validated when created"
    for where, params in _parameter_sets(deployment):
        unknown = set(params) - set(flow.parameters.properties)
        assert not unknown, f"{name}.{where}: {sorted(unknown)} are not parameters of titlegen"
        nested = {k for k, v in params.items() if isinstance(v, (dict, list))}
        assert not nested, f"{name}.{where}: {sorted(nested)} override a whole section; override top-level scalars only"
        assert validate(params, schema, raise_on_error=True, ignore_required=True) == []
        TitlegenParams(**params)  # raises with the field name on a bad value


def test_flow_signature_matches_the_parameter_model(flow, schema):
    assert list(flow.parameters.properties) == list(TitlegenParams.model_fields)
    defaults = TitlegenParams()
    for name, prop in schema["properties"].items():
        expected = getattr(defaults, name)
        expected = expected.model_dump(mode="json") if hasattr(expected, "model_dump") else expected
        assert prop.get("default") == expected, f"default of {name} differs between flow and TitlegenParams"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"epochs": -1}, "epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"min_rouge_l": 1.5}, "min_rouge_l"),
        ({"preset": "tpu"}, "preset"),
        ({"clean": {"min_title_chars": 0}}, "clean"),
    ],
)
def test_the_servers_schema_rejects_bad_values(params, field, schema, flow):
    """What `enforce_parameter_schema` runs when a run is created, and the flow's own check."""
    with pytest.raises(ValidationError, match=field):
        validate(params, schema, raise_on_error=True, ignore_required=True)
    with pytest.raises(Exception, match=field):
        flow.validate_parameters(params)


def test_the_flow_schema_carries_every_rule_of_the_parameter_model(schema):
    """The server validates against the flow's schema: each top-level field must carry TitlegenParams' rules."""
    model = TitlegenParams.model_json_schema()
    for name, prop in model["properties"].items():
        if "$ref" in prop:
            continue  # sections: the same model, referenced
        flow_prop = {k: v for k, v in schema["properties"][name].items() if k not in ("title", "position")}
        assert flow_prop == {k: v for k, v in prop.items() if k != "title"}, name


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"run_name": "../../tmp/x"}, "run_name"),
        ({"run_name": "/etc/cron.d/x"}, "run_name"),
        ({"run_name": "r1\nSYSTEM \"evil\""}, "run_name"),
        ({"run_name": "r1\n"}, "run_name"),  # Python's `$` matches before a final line break
        ({"output_root": "/"}, "output_root"),
        ({"output_root": "/etc/"}, "output_root"),
        ({"ollama_model": "titlegen:candidate"}, "ollama_model"),
        ({"ollama_model": "-rm"}, "ollama_model"),
        ({"hf_repo": "no-namespace"}, "hf_repo"),
        ({"hf_repo": "org/name\n"}, "hf_repo"),
        ({"dataset": "data\u2028x"}, "dataset"),
        ({"ollama": {"extra_stop": ["\nSYSTEM x"]}}, "ollama.extra_stop"),
        ({"publish": {"hf_token_block": "a\rb"}}, "publish.hf_token_block"),
    ],
)
def test_the_servers_schema_rejects_hostile_values(params, field, schema, flow):
    """Rejected when the run is created (`enforce_parameter_schema`), and by the flow itself."""
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        validate(params, schema, raise_on_error=True, ignore_required=True)
    with pytest.raises(Exception, match=field.split(".")[0]):
        flow.validate_parameters(params)


def test_schedules_are_present_and_inactive():
    for name, deployment in DEPLOYMENTS.items():
        schedules = deployment.get("schedules") or []
        assert schedules, f"{name} has no retraining schedule"
        assert all(s.get("active") is False for s in schedules), f"{name}: schedules must be off by default"
        assert all(s.get("cron") for s in schedules)


def test_work_pools_and_pull_steps():
    full, docker = DEPLOYMENTS["full"], DEPLOYMENTS["full-docker"]
    assert full["work_pool"]["name"] == "titlegen-process"
    assert docker["work_pool"]["name"] == "titlegen-docker"
    pull = full.get("pull", CONFIG["pull"])
    assert pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $PWD }}"
    assert docker["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/app"


def test_docker_job_variables_fit_the_docker_work_pool():
    prefect_docker = pytest.importorskip("prefect_docker.worker", reason="pip install prefect-docker")
    template = prefect_docker.DockerWorker.get_default_base_job_template()
    variables = DEPLOYMENTS["full-docker"]["work_pool"]["job_variables"]
    assert validate(variables, template["variables"], raise_on_error=True, ignore_required=True) == []
    assert variables["image"] == "titlegen-train:latest"
    gpu = variables["container_create_kwargs"]["device_requests"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == [["gpu"]]
    # docker-py turns the dicts into DeviceRequest objects the same way.
    from docker.types import DeviceRequest

    assert DeviceRequest(**gpu)["Capabilities"] == [["gpu"]]


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_no_secret_is_stored_in_a_deployment(name):
    """Deploy-time templating would copy a secret into the server's database: env holds no secrets."""
    env = DEPLOYMENTS[name]["work_pool"].get("job_variables", {}).get("env", {})
    secretish = [k for k in env if any(w in k.upper() for w in ("TOKEN", "SECRET", "PASSWORD", "KEY"))]
    assert not secretish, f"{name}: {secretish} belong in a Secret block, not in prefect.yaml"
