"""`python -m titlegen.tasks.ollama`: the stage from the command line, against `tests/ollama_fake.py`."""

import json

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)
from titlegen.ollama_cli import main
from titlegen.runs import write_jsonl


def test_cli_runs_the_stage(fake_ollama, tmp_path, capsys):
    split_dir = tmp_path / "split"
    write_jsonl(split_dir / "test.jsonl", [{"input": "行政院今天通過明年度總預算案，總額約二兆九千億元，將送立法院審議。", "target": "政院通過總預算"}])
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF-not-really-a-model")
    code = main(["--run-dir", str(tmp_path), "--gguf", str(gguf), "--split-dir", str(split_dir), "--model", "tg",
                 "--max-title-chars", "20", "--min-title-chars", "4",
                 "--params", json.dumps({"host": fake_ollama.url, "smoke_articles": 1, "latency_requests": 1})])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["model"] == "tg:latest"
    assert main(["--run-dir", str(tmp_path), "--gguf", str(tmp_path / "absent.gguf"), "--split-dir", str(split_dir)]) == 1
    assert "does not exist" in capsys.readouterr().err
