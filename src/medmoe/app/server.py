"""The app's HTTP server: ``GET /`` the page, ``GET /health``, ``POST /api/analyse`` (body: the
file's bytes; query: ``name``, ``classes`` (comma-separated), ``report``, ``words`` (comma-separated)) -> JSON. A bad upload
is a 400 with ``{"error": message}``; the server keeps serving. One request runs the model at a time."""
from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

from ..errors import MedMoEError
from .analyse import MAX_UPLOAD, analyse


class Handler(BaseHTTPRequestHandler):
    server: "AppServer"

    def log_message(self, format, *args):  # one line per request on stderr is noise for a local app
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self):
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/health":
            self._json(HTTPStatus.OK, {"status": "ok", "model": self.server.model_name})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

    def do_POST(self):
        url = urlparse(self.path)
        if url.path != "/api/analyse":
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {url.path}"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        name = query.get("name", "upload")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.close_connection = True
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"{name}: bad Content-Length {length!r}"})
        length = int(length)
        if length > MAX_UPLOAD:
            self.close_connection = True  # the body is not read
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              {"error": f"{name}: {length / 2**20:.0f} MB is over the {MAX_UPLOAD // 2**20} MB limit"})
        data = self.rfile.read(length)
        classes = query.get("classes", "").split(",")
        try:
            with self.server.lock:
                result = analyse(self.server.model, data, name, classes, query.get("report", ""),
                                 query.get("words", "").split(","))
        except MedMoEError as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception as exc:  # the page says what went wrong and the server keeps serving
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{name}: {type(exc).__name__}: {exc}"})
        self._json(HTTPStatus.OK, result)


class AppServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model, host: str = "127.0.0.1", port: int = 7860):
        super().__init__((host, port), Handler)
        self.model, self.lock = model.eval(), threading.Lock()
        self.model_name = str(getattr(model, "source", "") or "model")
        self.page = (resources.files("medmoe.app") / "static" / "index.html").read_bytes()


def serve(model, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve until interrupted (Ctrl-C)."""
    with AppServer(model, host, port) as server:
        print(f"medmoe app on http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
