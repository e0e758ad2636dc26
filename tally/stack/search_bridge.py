"""The header bridge in front of the local search engine (local stack only).

The official ``elasticsearch`` client (8.x and 9.x) sends ``Accept`` and ``Content-Type`` as
``application/vnd.elasticsearch+json; compatible-with=N``, which OpenSearch answers with 406,
and raises ``UnsupportedProductError`` on any 2xx without ``X-Elastic-Product: Elasticsearch``.
Neither can be switched off. This bridge, an nginx from Debian's packages on the stack's public
search port, rewrites exactly those: the two request headers to the plain media types, and the
product header onto every answer. Everything else passes through untouched, streamed both ways
over kept-alive connections. Production talks to real Elasticsearch with no bridge.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from kernel.settings import Settings
from tally.stack.base import Server, ensure_tool
from tally.stack.search import engine_port

NGINX_PACKAGE = "nginx-light"

# The compatible media types the client sends, and what the engine understands instead.
MEDIA_TYPES = {
    r"vnd\.elasticsearch\+x-ndjson": "application/x-ndjson",
    r"vnd\.elasticsearch\+json": "application/json",
}


def _media_map(variable: str, header: str) -> str:
    rules = "".join(f'        "~*{pattern}" "{plain}";\n' for pattern, plain in MEDIA_TYPES.items())
    return (
        f"    map $http_{header} ${variable} {{\n{rules}        default $http_{header};\n    }}\n"
    )


def nginx_conf(home: Path, port: int, upstream: int, user: str | None) -> str:
    """The bridge's whole nginx configuration."""
    temp = home / "tmp"
    paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        (f"user {user};\n" if user else "")
        + "worker_processes 1;\n"
        + f"error_log {home / 'error.log'} warn;\n"
        + f"pid {home / 'nginx.pid'};\n"
        + "events { worker_connections 1024; }\n"
        + "http {\n"
        + "    access_log off;\n"
        + paths
        + _media_map("engine_accept", "accept")
        + _media_map("engine_content_type", "content_type")
        + f"    upstream engine {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n"
        + "    server {\n"
        + f"        listen 127.0.0.1:{port};\n"
        + "        client_max_body_size 0;\n"
        + "        proxy_request_buffering off;\n"
        + "        proxy_buffering off;\n"
        + "        proxy_read_timeout 600s;\n"
        + "        proxy_send_timeout 600s;\n"
        + "        location / {\n"
        + "            proxy_pass http://engine;\n"
        + "            proxy_http_version 1.1;\n"
        + '            proxy_set_header Connection "";\n'
        + "            proxy_set_header Accept $engine_accept;\n"
        + "            proxy_set_header Content-Type $engine_content_type;\n"
        + "            add_header X-Elastic-Product Elasticsearch always;\n"
        + "        }\n"
        + "    }\n"
        + "}\n"
    )


class SearchBridge(Server):
    """nginx on the public search port, forwarding to the engine with the headers rewritten."""

    name = "search-bridge"

    def __init__(self, settings: Settings, public_port: int) -> None:
        super().__init__(settings, public_port)
        self.upstream = engine_port(public_port)

    def install(self) -> None:
        self.nginx()

    @staticmethod
    def nginx() -> str:
        return shutil.which("nginx") or (
            "/usr/sbin/nginx"
            if Path("/usr/sbin/nginx").exists()
            else ensure_tool("nginx", NGINX_PACKAGE)
        )

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as reply:
                return bool(reply.headers.get("X-Elastic-Product") == "Elasticsearch")
        except OSError:
            return False

    def launch(self) -> None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.home / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        user = "root" if os.geteuid() == 0 else None
        conf = self.home / "nginx.conf"
        conf.write_text(nginx_conf(self.home, self.port, self.upstream, user))
        error_log = str(self.home / "error.log")  # before the configuration is read, too
        argv = [self.nginx(), "-p", str(self.home), "-e", error_log, "-c", str(conf)]
        self.spawn([*argv, "-g", "daemon off;"])
