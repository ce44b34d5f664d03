"""The deployed API served at http://localhost:<port>: LocalStack only exposes an API Gateway stage under a long
`/_aws/execute-api/<id>/<stage>` path, so a small threaded HTTP proxy in the runner's process forwards every
request there and passes the reply back as it came (errors included), which lets the documented URLs and curl
commands work verbatim against the local stack.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.paths import STAGE
from local.processes import _port_free
from local.services import Profile


class ApiProxy:
    """Serves the deployed API Gateway stage at http://localhost:<port>, so the guide's URLs work verbatim."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}

    def __init__(self, profile: Profile, rest_api_id: str) -> None:
        self.target = f"{profile.endpoint}/_aws/execute-api/{rest_api_id}/{STAGE}"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                request = urllib.request.Request(
                    proxy.target + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, reply_headers, payload = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, reply_headers, payload = error.code, error.headers, error.read()
                except OSError as error:
                    status, reply_headers = 502, {"Content-Type": "application/json"}
                    payload = json.dumps({"error": "bad_gateway", "message": str(error)}).encode()
                self.send_response(status)
                for key, value in reply_headers.items():
                    if key.lower() not in proxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_request  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        if not _port_free(profile.api_port):
            raise SystemExit(f"port {profile.api_port} is taken: stop what uses it (make down) and retry")
        self.server = ThreadingHTTPServer(("127.0.0.1", profile.api_port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
