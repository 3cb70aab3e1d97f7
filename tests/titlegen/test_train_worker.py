"""The training worker: the lead-only augmentation (`train.augmentation='lead'`), the out-of-memory advice, the
speed defaults that depend on the model (gradient checkpointing, Unsloth's compile)."""

import numpy as np
import pytest

from titlegen.params import TrainParams
from titlegen.records import TrainWorkerConfig
from titlegen.runs import write_jsonl
from titlegen.train_worker import (CHECKPOINTING_MIN_PARAMS, COMPILE_QLORA_MAX_PARAMS, adapter_to_keep, build_dataset, lead_view, out_of_memory_advice, unsloth_checkpointing, use_checkpointing,
                                   unsloth_load_options, use_unsloth_compile)

ARTICLE = "行政院今天通過明年度總預算案，總歲出創新高。社福與國防經費增幅最大，將送立法院審議。" * 4
RESOLVED = {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 512, "optimizer": "adamw_torch"}


def _config(**train) -> TrainWorkerConfig:
    """A worker config whose paths are never opened by the function under test."""
    return TrainWorkerConfig(base_model_dir="base", train_file="train.jsonl", output_dir="out", checkpoint_dir="ckpt",
                             max_title_chars=40, epochs=1.0, learning_rate=1e-4, lora_rank=8,
                             train=TrainParams(**{**RESOLVED, **train}))


def test_lead_view_cuts_at_the_last_sentence_end_inside_the_limit():
    assert lead_view(ARTICLE, 40) == "行政院今天通過明年度總預算案，總歲出創新高。"
    # No sentence end in the window (or only a very early one): the plain character cut.
    assert lead_view("一二三四五六七八九十" * 10, 25) == ("一二三四五六七八九十" * 10)[:25]
    assert lead_view("短。" + "長" * 100, 60) == ("短。" + "長" * 100)[:60]


def test_lead_augmentation_doubles_training_rows_only(gemma_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_tokenizer_dir)
    rows = [{"content": ARTICLE, "title": "總預算案創新高"}, {"content": ARTICLE[::-1], "title": "另一則標題測試"}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    config = _config(max_seq_length=512, augmentation="lead", lead_chars=40)

    plain = build_dataset(str(tmp_path / "train.jsonl"), tokenizer, config)
    augmented = build_dataset(str(tmp_path / "train.jsonl"), tokenizer, config, augment=True)
    assert len(plain) == 2 and len(augmented) == 4
    assert augmented[0]["input_ids"] == plain[0]["input_ids"]
    # The added rows are shorter prompts with the same title tokens carrying the loss.
    lead_row, full_row = augmented[2], augmented[0]
    assert len(lead_row["input_ids"]) < len(full_row["input_ids"])
    title = [t for t, m in zip(full_row["input_ids"], full_row["completion_mask"]) if m]
    assert [t for t, m in zip(lead_row["input_ids"], lead_row["completion_mask"]) if m] == title

    config.train.augmentation = "none"
    assert len(build_dataset(str(tmp_path / "train.jsonl"), tokenizer, config, augment=True)) == 2


def test_out_of_memory_advice_names_the_parameters_to_change():
    train = {"per_device_batch_size": 8, "gradient_accumulation_steps": 1, "quantization": "16bit",
             "gradient_checkpointing": False, "max_seq_length": 1024}
    advice = out_of_memory_advice(_config(**train), 80 * 2**30)
    assert "per_device_batch_size=8, quantization=16bit on a 80 GiB GPU" in advice
    for fix in ("train.per_device_batch_size=4 with train.gradient_accumulation_steps=2", "train.quantization='4bit'",
                "train.gradient_checkpointing=true", "train.max_seq_length (now 1024)", "resumes from its last checkpoint"):
        assert fix in advice
    # Already at the smallest settings: only what is left to change.
    small = out_of_memory_advice(_config(**{**train, "per_device_batch_size": 1, "quantization": "4bit", "gradient_checkpointing": True}), 16 * 2**30)
    assert "per_device_batch_size=" not in small.split("Re-run with")[1] and "4bit'" not in small
    assert "max_seq_length" in small


def test_worker_config_round_trips_and_rejects_typos_and_unresolved_presets(tmp_path):
    config = _config(augmentation="lead")
    assert TrainWorkerConfig.read(config.write(tmp_path / "worker_config.json")) == config
    with pytest.raises(ValueError, match="max_seq_lenght"):
        TrainWorkerConfig.model_validate({**config.model_dump(), "train": {**config.train.model_dump(), "max_seq_lenght": 1}})
    with pytest.raises(ValueError, match="train.per_device_batch_size unset"):
        TrainWorkerConfig.model_validate({**config.model_dump(), "train": {**config.train.model_dump(), "per_device_batch_size": None}})


class _Params:
    """A stand-in model: `parameters()` is all `use_checkpointing` reads."""

    def __init__(self, *sizes: int):
        self.sizes = sizes

    def parameters(self):
        return [type("P", (), {"numel": lambda self, n=n: n})() for n in self.sizes]


def test_gradient_checkpointing_default_follows_model_size_and_device():
    small, big = _Params(200_000_000, 70_000_000), _Params(CHECKPOINTING_MIN_PARAMS // 2, CHECKPOINTING_MIN_PARAMS // 2)
    auto = _config()
    assert auto.train.gradient_checkpointing is None
    assert use_checkpointing(auto, small, cuda=True) is False  # 270M-sized: activations fit, recompute costs speed
    assert use_checkpointing(auto, big, cuda=True) is True  # E4B-sized: memory first
    assert use_checkpointing(auto, small, cuda=False) is True  # CPU boxes are short of memory
    assert use_checkpointing(_config(gradient_checkpointing=True), small, cuda=True) is True
    assert use_checkpointing(_config(gradient_checkpointing=False), big, cuda=True) is False
    # The out-of-memory advice knows what the run actually used.
    assert "gradient_checkpointing=true" not in out_of_memory_advice(auto, 16 * 2**30, checkpointing=True)
    assert "gradient_checkpointing=true" in out_of_memory_advice(auto, 16 * 2**30, checkpointing=False)


def test_checkpointed_activations_go_to_host_memory_unless_turned_off():
    # Unsloth's own recipe ("unsloth": offloaded) by default; false keeps the checkpointed inputs on the card.
    assert unsloth_checkpointing(_config(gradient_checkpointing=True).train) == "unsloth"
    assert unsloth_checkpointing(_config(gradient_checkpointing=True, offload_activations=True).train) == "unsloth"
    assert unsloth_checkpointing(_config(gradient_checkpointing=True, offload_activations=False).train) is True
    # Without checkpointing there is nothing to offload, whatever the setting says.
    assert unsloth_checkpointing(_config(gradient_checkpointing=False, offload_activations=False).train) is False


def test_per_layer_embeddings_go_to_host_memory_for_4bit_qlora_unless_turned_off():
    # Unsloth's offload_embedding=True moves Gemma 3n's per-layer table; without it Unsloth keeps its own "auto" rule.
    assert unsloth_load_options(_config(quantization="4bit").train, four_bit=True) == {"attn_implementation": "sdpa", "offload_embedding": True}
    assert "offload_embedding" not in unsloth_load_options(_config(quantization="16bit").train, four_bit=False)
    assert "offload_embedding" not in unsloth_load_options(_config(per_layer_embeddings_on_host=False).train, four_bit=True)
    assert unsloth_load_options(_config(per_layer_embeddings_on_host=True, attn_implementation=None).train, four_bit=False) == {"offload_embedding": True}


def test_unsloth_compile_default_is_on_for_16bit_lora_and_small_qlora_bases(tmp_path):
    assert use_unsloth_compile(_config(quantization="16bit")) is True
    # 4-bit QLoRA: by the base's size (Gemma 3 270M compiles in ~30 s and steps 1.3x faster; E4B waits minutes).
    assert use_unsloth_compile(_config(quantization="4bit"), parameters=268_098_176) is True
    assert use_unsloth_compile(_config(quantization="4bit"), parameters=COMPILE_QLORA_MAX_PARAMS) is False
    # An explicit setting wins either way.
    assert use_unsloth_compile(_config(quantization="4bit", unsloth_compile=True), parameters=8_000_000_000) is True
    assert use_unsloth_compile(_config(quantization="4bit", unsloth_compile=False), parameters=1000) is False
    assert use_unsloth_compile(_config(quantization="16bit", unsloth_compile=False)) is False
    # The size comes from the base folder's safetensors headers; a folder without any counts as unsized: eager.
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((64, 32), dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    small = _config(quantization="4bit").model_copy(update={"base_model_dir": str(tmp_path)})
    assert use_unsloth_compile(small) is True
    assert use_unsloth_compile(_config(quantization="4bit").model_copy(update={"base_model_dir": str(tmp_path / "none")})) is False


def test_kept_adapter_is_the_lowest_validation_loss_unless_last_is_asked_for():
    evals = [{"step": 118, "eval_loss": 2.95}, {"step": 236, "eval_loss": 2.99}, {"step": 354, "eval_loss": 3.10}]
    saved_best = {"step": 118, "eval_loss": 2.95}
    assert adapter_to_keep("best", evals, saved_best, 354) == {"from": "best", "step": 118, "eval_loss": 2.95}
    assert adapter_to_keep("last", evals, saved_best, 354) == {"from": "last", "step": 354, "eval_loss": 3.10}
    # The saved best adapter is not the lowest loss on record (a resumed run, say), or there was no validation:
    # the final weights, whatever was asked for.
    assert adapter_to_keep("best", evals, {"step": 236, "eval_loss": 2.99}, 354)["from"] == "last"
    assert adapter_to_keep("best", [], None, 40) == {"from": "last", "step": 40, "eval_loss": None}
    with pytest.raises(ValueError, match="keep_adapter"):
        TrainParams(**{**RESOLVED, "keep_adapter": "first"})


def test_kept_adapter_under_checks_is_the_fewest_failed_checks_then_the_lower_loss():
    evals = [{"step": 118, "eval_loss": 2.95, "eval_failed_checks": 0.055},
             {"step": 236, "eval_loss": 2.99, "eval_failed_checks": 0.017},
             {"step": 354, "eval_loss": 3.10, "eval_failed_checks": 0.017}]
    assert adapter_to_keep("checks", evals, {"step": 236}, 354) == {"from": "best", "step": 236, "eval_loss": 2.99, "failed_checks": 0.017}
    # The loss alone would have kept epoch 1; a pass without titles ranks as all failed.
    assert adapter_to_keep("best", evals, {"step": 118}, 354)["step"] == 118
    assert adapter_to_keep("checks", [{"step": 10, "eval_loss": 1.0}, {"step": 20, "eval_loss": 2.0, "eval_failed_checks": 0.5}],
                           {"step": 20}, 20)["from"] == "best"


@pytest.mark.parametrize("fixture", ["tiny_gemma3_dir", "tiny_gemma3n_dir"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_see_each_other_so_the_worker_pads_instead_of_packing(fixture, attn, request):
    # Why training batches are padded, not packed into fixed-length rows with `position_ids` restarting per article
    # (docs/finetune.md "Fifteenth lease"): with SDPA or eager attention a packed second article's logits differ from
    # the same article run alone about as much as with no restart at all. If this fails, packing became an option.
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(request.getfixturevalue(fixture)), attn_implementation=attn, dtype=torch.float32).eval()
    first, second = 24, 20
    ids = torch.randint(10, 500, (1, first + second), generator=torch.Generator().manual_seed(0))
    positions = lambda n: torch.arange(n)[None]  # noqa: E731
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=torch.cat([positions(first), positions(second)], 1)).logits[0, first:]
        alone = model(input_ids=ids[:, first:], position_ids=positions(second)).logits[0]
        unrestarted = model(input_ids=ids, position_ids=positions(first + second)).logits[0, first:]
    leak, control = (packed - alone).abs().mean(), (unrestarted - alone).abs().mean()
    assert control > 0 and leak > 0.5 * control
