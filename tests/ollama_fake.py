"""A stand-in for Ollama's REST transport: a local HTTP server that speaks the endpoints titlegen
uses and records each request's method, path and JSON body. Import `fake_ollama` into a test module
to use it as a fixture (parametrize it indirectly with `(version, answer)`)."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakeOllama(ThreadingHTTPServer):
    """Speaks the Ollama endpoints the stage uses; records each request's method, path and JSON."""

    def __init__(self, version: str, answer: dict):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.version, self.answer = version, answer
        self.requests: list[tuple[str, str, object]] = []
        self.blobs: set[str] = set()
        self.create_status = "success"
        self.models: dict[str, str] = {}
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, method: str, path: str) -> list:
        return [body for m, p, body in self.requests if m == method and p == path]


class _Handler(BaseHTTPRequestHandler):
    server: FakeOllama

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _read(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, code: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        srv, raw = self.server, self._read()
        body = json.loads(raw) if raw and not self.path.startswith("/api/blobs/") else None
        srv.requests.append((self.command, self.path, body))
        if self.path == "/api/version":
            return self._reply(200, {"version": srv.version})
        if self.path.startswith("/api/blobs/"):
            digest = self.path.rsplit("/", 1)[1]
            if self.command == "HEAD":
                return self._reply(200 if digest in srv.blobs else 404)
            assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
            srv.blobs.add(digest)
            return self._reply(201)
        if self.path == "/api/create":
            name = body.get("model") or body.get("name")
            srv.models[name] = hashlib.sha256(raw).hexdigest()
            return self._reply(200, {"status": srv.create_status})
        if self.path == "/api/tags":
            return self._reply(200, {"models": [{"name": n, "model": n, "digest": d} for n, d in srv.models.items()]})
        if self.path == "/api/generate":
            return self._reply(200, {"model": body["model"], "done": True, **srv.answer})
        if self.path == "/api/show":
            if body["model"] not in srv.models:
                return self._reply(404, {"error": f"model '{body['model']}' not found"})
            return self._reply(200, {"modelfile": "", "details": {}})
        if self.path == "/api/copy":
            if body["source"] not in srv.models:
                return self._reply(404, {"error": f"model '{body['source']}' not found"})
            srv.models[body["destination"]] = srv.models[body["source"]]
            return self._reply(200)
        if self.path == "/api/delete":
            srv.models.pop(body["model"], None)
            return self._reply(200)
        return self._reply(404, {"error": f"no route {self.path}"})

    do_GET = do_POST = do_HEAD = do_DELETE = _handle


GOOD_ANSWER = {
    "response": "政院通過明年度總預算", "done_reason": "stop", "total_duration": 120_000_000,
    "load_duration": 1_000_000, "prompt_eval_count": 80, "prompt_eval_duration": 60_000_000,
    "eval_count": 12, "eval_duration": 50_000_000,
}


@pytest.fixture
def fake_ollama(request):
    version, answer = getattr(request, "param", ("0.9.6", GOOD_ANSWER))
    server = FakeOllama(version, answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
