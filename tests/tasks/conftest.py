"""Fixtures for the merge tests: a LoRA adapter with non-zero weights on a tiny base, and a split folder."""

import json
from pathlib import Path

import pytest

ARTICLES = [
    "行政院今天通過明年度中央政府總預算案，總歲出規模創下新高，其中社福與國防經費增幅最大，將送立法院審議。",
    "中央氣象署表示，強烈颱風預計明天清晨登陸東部，全台各地將有豪雨，民眾應避免前往山區與海邊。",
    "台北市政府宣布捷運環狀線北環段動工，預計六年後完工通車，沿線居民期待改善交通。",
]


def make_adapter(base_dir: Path, out_dir: Path, rank: int = 4, seed: int = 0) -> Path:
    """A PEFT save_pretrained folder (with tokenizer) whose LoRA B matrices are random, so merging changes weights."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoTokenizer

    torch.manual_seed(seed)
    arch = AutoConfig.from_pretrained(base_dir).architectures[0]
    model = getattr(transformers, arch).from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture
def split_dir(tmp_path) -> Path:
    d = tmp_path / "split"
    d.mkdir()
    (d / "validation.jsonl").write_text(
        "".join(json.dumps({"input": a, "target": "標題"}, ensure_ascii=False) + "\n" for a in ARTICLES), encoding="utf-8"
    )
    return d
