"""`TitlegenParams`: bad values are rejected naming the field, presets fill what the user left unset."""

import pydantic
import pytest

from titlegen.params import CPU_BASE_MODEL, GPU_BASE_MODEL, PRESETS, Section, TitlegenParams


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"min_rouge_l": 1.5}, "min_rouge_l"),
        ({"min_rouge_l": -0.1}, "min_rouge_l"),
        ({"preset": "tpu"}, "preset"),
        ({"epochs": "three"}, "epochs"),
        ({"epoch": 1}, "epoch"),  # a typo of a top-level field
        ({"clean": {"min_title_chars": 0}}, "clean.min_title_chars"),
        ({"clean": {"max_titel_chars": 30}}, "clean.max_titel_chars"),  # a typo inside a section
        ({"clean": {"overlong_content": "wrap"}}, "clean.overlong_content"),
        ({"split": {"test_fraction": 0.6}}, "split.test_fraction"),
        ({"split": {"validation_fraction": 0.3, "test_fraction": 0.3}}, "split.validation_fraction"),
        ({"clean": {"min_title_chars": 30, "max_title_chars": 20}}, "clean.min_title_chars"),
        ({"clean": {"min_content_chars": 900, "max_content_chars": 800}}, "clean.min_content_chars"),
        ({"columns": {"input": "title", "target": "title"}}, "columns.input"),
        ({"train": {"quantization": "8bit"}}, "train.quantization"),
        ({"evaluation": {"bootstrap_samples": 10}}, "evaluation.bootstrap_samples"),
        ({"gate": {"min_rouge_1": 2}}, "gate.min_rouge_1"),
        ({"publish": {"gguf_types": ["q4_0"]}}, "publish.gguf_types"),
        ({"ollama": {"num_ctx": 16}}, "ollama.num_ctx"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(pydantic.ValidationError) as err:
        TitlegenParams(**overrides)
    assert field in str(err.value)


def test_every_problem_of_a_run_is_reported_at_once():
    with pytest.raises(pydantic.ValidationError) as err:
        TitlegenParams(epochs=-1, lora_rank=0, preset="tpu")
    text = str(err.value)
    assert all(f in text for f in ("epochs", "lora_rank", "preset"))


def test_every_field_is_documented():
    def walk(model: type[pydantic.BaseModel], prefix: str = ""):
        for name, field in model.model_fields.items():
            yield prefix + name, field
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Section):
                yield from walk(ann, f"{prefix}{name}.")

    for name, field in walk(TitlegenParams):
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            assert ann.__doc__, f"section {name} has no docstring"
        else:
            assert field.description, f"{name} has no description"
            assert not field.is_required(), f"{name} has no default"


@pytest.mark.parametrize(("cuda", "preset", "base_model"), [(False, "cpu", CPU_BASE_MODEL), (True, "gpu", GPU_BASE_MODEL)])
def test_auto_preset_follows_cuda(cuda, preset, base_model):
    resolved = TitlegenParams().resolve(cuda=cuda)
    assert resolved.preset == preset
    assert resolved.base_model == base_model
    assert resolved.epochs == PRESETS[preset]["top"]["epochs"]
    for section, values in PRESETS[preset]["sections"].items():
        for key, value in values.items():
            assert getattr(getattr(resolved, section), key) == value, f"{section}.{key}"


def test_user_values_win_over_the_preset():
    resolved = TitlegenParams(epochs=2, base_model="/models/mine", train={"per_device_batch_size": 16}).resolve(cuda=False)
    assert resolved.epochs == 2
    assert resolved.base_model == "/models/mine"
    assert resolved.train.per_device_batch_size == 16
    assert resolved.train.max_seq_length == PRESETS["cpu"]["sections"]["train"]["max_seq_length"]


def test_explicit_cpu_preset_on_a_cuda_machine():
    assert TitlegenParams(preset="cpu").resolve(cuda=True).base_model == CPU_BASE_MODEL


def test_gpu_preset_without_cuda_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="preset='gpu'.*CUDA.*preset='cpu'"):
        TitlegenParams(preset="gpu").resolve(cuda=False)


def test_resolve_leaves_the_original_untouched_and_round_trips():
    params = TitlegenParams()
    resolved = params.resolve(cuda=False)
    assert params.preset == "auto" and params.base_model is None
    assert TitlegenParams(**resolved.model_dump(mode="json")) == resolved
