"""Disk-space pre-check of the merge stage: what final-hf and the GGUF files will take, against what is free.

The estimate is parameters x bytes per parameter of each output, with the parameter count read
from the base checkpoint's safetensors headers (no tensor is loaded). A full disk otherwise stops
the GGUF conversion minutes in. The base is a local folder or a Hub id (the default GPU run's
`unsloth/gemma-3n-E4B-it`): a Hub id is read from its snapshot in the Hugging Face cache (where
training put it), else from the Hub's safetensors metadata (headers only, `get_safetensors_metadata`).
"""

import logging
import math
import shutil
from pathlib import Path

from titlegen.merge_worker import merged_dtype_name
from titlegen.params import PublishParams


class NotEnoughDiskSpace(OSError):
    """The run folder's disk cannot hold final-hf and the GGUF files; the message says what to change."""


# Bytes per parameter of what merge writes: final-hf in its dtype, and each GGUF type (Q8_0 stores
# 32 int8 weights plus one fp16 scale per block). Measured on Gemma 3 270M: final-hf 536 MB,
# F16 543 MB, Q8_0 292 MB (bench/results/merge_export.json).
BYTES_PER_PARAM = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 34 / 32}


def checkpoint_parameters(folder: str | Path) -> tuple[int, str | None]:
    """(parameter count, widest floating dtype) of a folder's *.safetensors, read from their headers only."""
    from safetensors import safe_open

    count, dtypes = 0, set()
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for key in st.keys():
                tensor = st.get_slice(key)
                count += math.prod(tensor.get_shape())
                dtypes.add(tensor.get_dtype())
    widest = next((d for d in ("F32", "BF16", "F16") if d in dtypes), None)
    return count, widest


def local_checkpoint(base_model: str | Path) -> Path | None:
    """The local folder of `base_model`: the folder itself, or a Hub id's snapshot in the Hugging Face cache; else None."""
    path = Path(base_model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(base_model), local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError):
        return None


def base_parameters(base_model: str | Path) -> tuple[int, str | None]:
    """(parameter count, widest floating dtype) of the base: local headers, else the Hub's metadata; (0, None) if unknown."""
    local = local_checkpoint(base_model)
    if local is not None:
        return checkpoint_parameters(local)
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, NotASafetensorsRepoError, SafetensorsParsingError

    try:
        counts = HfApi().get_safetensors_metadata(str(base_model)).parameter_count
    except (HFValidationError, NotASafetensorsRepoError, SafetensorsParsingError, httpx.HTTPError, OSError) as e:
        # offline, not on the Hub, gated without a token, no safetensors: no estimate, and the merge goes on
        logging.getLogger(__name__).warning("No disk-space estimate: the size of %s is unknown (%s)", base_model, type(e).__name__)
        return 0, None
    widest = next((d for d in ("F32", "BF16", "F16") if d in counts), None)
    return sum(counts.values()), widest


def disk_needed(base_model_dir: str | Path, publish: PublishParams, final_hf: bool, gguf: bool) -> dict[str, int]:
    """Bytes that merge is about to write, per output (`final-hf`, `gguf/<type>`); {} when the base size is unknown.

    An upper bound: the base's vision and audio towers count although Gemma 3n's GGUF leaves them out."""
    params, stored = base_parameters(base_model_dir)
    if not params:
        return {}
    dtype = merged_dtype_name(publish.merged_dtype, {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(stored or ""))
    out = {"final-hf": int(params * BYTES_PER_PARAM[dtype])} if final_hf else {}
    if gguf:
        out |= {f"gguf/{t}": int(params * BYTES_PER_PARAM[t]) for t in publish.gguf_types}
    return out


def check_disk_space(run: Path, needed: dict[str, int]) -> None:
    """Fail before any work when the run folder's disk cannot take `needed` (a full disk otherwise stops the GGUF conversion minutes in)."""
    if not needed:
        return
    probe = next(p for p in (run, *run.parents) if p.exists())
    free = shutil.disk_usage(probe).free
    total = sum(needed.values())
    if total > free:
        types = [k.split("/", 1)[1] for k in needed if k.startswith("gguf/")]
        parts = ", ".join(f"{k} ~{v / 1e9:.1f} GB" for k, v in needed.items())
        raise NotEnoughDiskSpace(
            f"merge needs about {total / 1e9:.1f} GB free on the disk of {run} ({parts}) but {free / 1e9:.1f} GB is free. "
            "Free space there, set output_root to a larger disk, or export fewer GGUF types "
            f"(publish.gguf_types; this run converts {types})."
        )
