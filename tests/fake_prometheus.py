"""A fake Prometheus on loopback answering range queries from a table, and its fixture."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakePrometheus:
    """Answers /api/v1/query_range from a table: (metric part, label value) -> [(t, value)]."""

    def __init__(self, series: dict, label="kn_service_name", status=200, body=None):
        self.series, self.label, self.status, self.body = series, label, status, body
        self.queries: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                args = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                fake.queries.append({"path": url.path, "auth": self.headers.get("Authorization"), **args})
                if fake.body is not None:
                    payload = fake.body
                else:
                    part = "count" if "_count{" in args["query"] else "sum"
                    payload = {"status": "success", "data": {"resultType": "matrix", "result": [
                        {"metric": {fake.label: name}, "values": [[t, str(v)] for t, v in values]}
                        for (p, name), values in fake.series.items() if p == part]}}
                data = json.dumps(payload).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def prometheus():
    servers = []

    def start(*args, **kw):
        servers.append(FakePrometheus(*args, **kw))
        return servers[-1]
    yield start
    for s in servers:
        s.close()
