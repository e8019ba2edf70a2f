"""A scripted HTTP(S) server on 127.0.0.1 standing in for the API server in unit tests.

Each test queues the responses; the server records every request as it arrived (method, path
with query, headers, body, the client certificate's CN), so a test sees exactly what
engine/kube.py put on the wire.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_cn: str | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    delay: float = 0.0  # seconds before answering (read timeouts)


@dataclass
class Server:
    url: str
    replies: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def reply(self, status: int = 200, body: Any = None, delay: float = 0.0) -> None:
        self.replies.append(Reply(status, body, delay))


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            cn = None
            peer = getattr(self.connection, "getpeercert", None)
            cert = peer() if peer else None
            if cert:
                cn = dict(x[0] for x in cert["subject"]).get("commonName")
            with lock:
                server.seen.append(
                    Seen(self.command, self.path, dict(self.headers.items()), body, cn)
                )
                reply = server.replies.pop(0) if server.replies else Reply(200, {})
            if reply.delay:
                time.sleep(reply.delay)
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A server on a free port of 127.0.0.1, stopped on exit. ``tls``: the server's context."""
    server = Server(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
