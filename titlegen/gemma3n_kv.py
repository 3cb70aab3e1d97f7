"""Gemma 3n's KV-shared layers: put back the tensors llama.cpp needs before GGUF conversion.

transformers 5 builds the KV-shared layers of Gemma 3n (the last `num_kv_shared_layers`) without
`k_proj`, `v_proj` and `k_norm` and so never saves them; llama.cpp refuses such a checkpoint
("tensor 'blk.20.attn_k.weight' not found"). `restore_kv_shared_tensors` writes them back into the
saved folder as one extra shard, copied from the base checkpoint (Google's checkpoints carry them),
or, when the base lacks them too, as zeros/ones of the right shape: llama.cpp loads but never
computes with them, since those layers read the K/V cache of earlier layers.
"""

import json
import re
from pathlib import Path
from typing import Any

KV_SHARED_SHARD = "model-kv-shared.safetensors"


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config


def _weight_names(folder: Path) -> dict[str, str]:
    """tensor name -> shard file name of a saved HF folder."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return dict(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    names: dict[str, str] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            names.update({k: shard.name for k in f.keys()})
    return names


def kv_shared_tensor_names(folder: Path) -> list[str]:
    """Names llama.cpp needs for the KV-shared layers of a Gemma 3n folder ([] for other models)."""
    config = json.loads((folder / "config.json").read_text())
    text = _text_config(config)
    if not str(text.get("model_type", config.get("model_type", ""))).startswith("gemma3n"):
        return []
    layers, shared = int(text["num_hidden_layers"]), int(text.get("num_kv_shared_layers") or 0)
    names = _weight_names(folder)
    prefix = next(
        (m.group(1) for n in names if (m := re.match(r"^(.*?)layers\.0\.self_attn\.q_proj\.weight$", n))), None
    )
    if prefix is None:
        raise ValueError(f"{folder} looks like Gemma 3n but has no layers.0.self_attn.q_proj.weight")
    return [
        f"{prefix}layers.{i}.self_attn.{part}.weight"
        for i in range(layers - shared, layers)
        for part in ("k_proj", "v_proj", "k_norm")
    ]


def _base_shards(base_model: str) -> list[Path]:
    path = Path(base_model).expanduser()
    if not path.exists():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(base_model, allow_patterns=["*.safetensors", "*.json"]))
    return sorted(path.glob("*.safetensors"))


def restore_kv_shared_tensors(folder: str | Path, base_model: str) -> dict[str, Any]:
    """Add the missing KV-shared `k_proj`/`v_proj`/`k_norm` tensors of a Gemma 3n folder, in place.

    Each is copied from the base checkpoint (matched by the part after the module prefix, so
    `model.language_model.layers.30...` matches `model.layers.30...`), else synthesized (see the
    module docstring). Returns counts and where each came from, for export.json.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    wanted = kv_shared_tensor_names(folder)
    present = _weight_names(folder)
    missing = [n for n in wanted if n not in present]
    report: dict[str, Any] = {"needed": len(wanted), "already_present": len(wanted) - len(missing), "from_base": 0, "synthesized": 0}
    if not missing:
        return report

    def tail(name: str) -> str:
        return name[name.index("layers."):]

    want_tails = {tail(n): n for n in missing}
    found: dict[str, torch.Tensor] = {}
    for shard in _base_shards(base_model):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                if "layers." in key and tail(key) in want_tails and "vision" not in key and "audio" not in key:
                    found[want_tails[tail(key)]] = f.get_tensor(key)
    # Shape and dtype templates: a non-shared layer's k_proj / k_norm of the saved model itself.
    first_shared = min(int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in wanted)
    prefix = wanted[0][: wanted[0].index("layers.")]
    tensors: dict[str, torch.Tensor] = {}
    for name in missing:
        part = name.rsplit(".", 2)[-2]
        template_name = f"{prefix}layers.{first_shared - 1}.self_attn.{'k_norm' if part == 'k_norm' else 'k_proj'}.weight"
        with safe_open(str(folder / present[template_name]), "pt") as f:
            template = f.get_tensor(template_name)
        if name in found:
            tensors[name] = found[name].to(template.dtype).contiguous()
            report["from_base"] += 1
        else:
            fill = torch.ones_like if part == "k_norm" else torch.zeros_like
            tensors[name] = fill(template)
            report["synthesized"] += 1
    save_file(tensors, str(folder / KV_SHARED_SHARD), metadata={"format": "pt"})
    _rewrite_index(folder, present, {n: KV_SHARED_SHARD for n in tensors})
    report["shard"] = KV_SHARED_SHARD
    return report


def _rewrite_index(folder: Path, present: dict[str, str], added: dict[str, str]) -> None:
    weight_map = {**present, **added}
    total = sum((folder / f).stat().st_size for f in set(weight_map.values()))
    index = folder / "model.safetensors.index.json"
    meta = json.loads(index.read_text()).get("metadata", {}) if index.exists() else {}
    meta["total_size"] = total  # an upper bound (file sizes incl. headers); loaders only report it
    index.write_text(json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
