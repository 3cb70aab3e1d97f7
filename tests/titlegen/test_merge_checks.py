"""merge verification tools (titlegen.merge_checks) on synthetic logits and a tiny random Gemma 3 adapter."""

import sys
from pathlib import Path

import pytest

from titlegen import merge_checks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tasks"))
from conftest import make_adapter  # noqa: E402  (the merge tests' adapter maker)


class _OneStepModel:
    """Logits = Linear(constant hidden state): exact in float32, rounded under bf16 autocast."""

    def __init__(self, logits):
        import torch

        self.head = torch.nn.Linear(1, len(logits), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(logits).unsqueeze(1))
        self.device = torch.device("cpu")

    def to(self, dtype):
        return self

    def __call__(self, input_ids, logits_to_keep):
        import torch
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.head(torch.ones(1, 1, 1)))


@pytest.mark.parametrize(("logits", "expected"), [
    # peaked (a trained model): final-hf's token 5 lies 4.0 below the top token 3, far beyond bf16 noise
    ([0.0, 0.0, 0.0, 5.0, 0.0, 1.0], "MISMATCH"),
    # near-uniform (random weights): token 5 lies 0.0004 below the top, inside bf16's rounding of ~1.0
    ([1.0, 1.0, 1.0, 1.0012, 1.0, 1.0008], "rounding-sensitive"),
])
def test_precision_probe_excuses_only_differences_within_rounding_noise(logits, expected):
    """A real fine-tune (peaked logits) stays under the strict rule; only a token inside bf16 noise is excused."""
    import torch

    def tokenizer(text, return_tensors, add_special_tokens):
        return {"input_ids": torch.tensor([[7, 8]])}

    reference = [{"ids": [3, 1]}]
    results = [{"ids": [5, 1]}]
    comparison = merge_checks.summarize({"rule": "r", "articles": [
        {"article": 0, "result": "MISMATCH", "divergence_token": 0, "adapter_model_margin": 0.0}]})
    out = merge_checks.precision_probe(lambda dtype: _OneStepModel(logits), tokenizer, ["p"], reference, results, comparison, torch.float32)
    row = out["articles"][0]
    assert row["result"] == expected
    assert out["passed"] == (expected != "MISMATCH")
    assert row["precision_probe"]["dtype"] == "bfloat16"


def test_adapter_too_small_to_survive_bf16_is_not_reported_as_unmerged(tiny_gemma3_dir, tmp_path):
    """A young adapter (B ~ 1e-7: a few steps after B = 0) rounds away in bf16: the merged weights equal the base's,
    which is what the merge should give, not a LoRA left out."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_gemma3_dir, tmp_path / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gemma3_dir, dtype=torch.float32), str(adapter))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(2e-6)
    lora = merge_checks.lora_modules(model, torch.bfloat16)
    assert len(lora) == 14 and max(lora.values()) < 16
    base = merge_checks.tensor_digests(model.base_model.model, torch.bfloat16)
    merged = merge_checks.tensor_digests(model.merge_and_unload(), torch.bfloat16)
    check = merge_checks.check_merge(base, merged, lora)
    assert check["ok"] and check["lora_weights"] == 14 and check["lora_weights_expected_to_change"] == 0
