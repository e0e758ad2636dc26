"""The local stack's search engine: OpenSearch (Lucene) from Maven Central jars, one node.

Tally's code talks to it with the official ``elasticsearch`` client, which refuses a server
that does not call itself Elasticsearch; the header bridge (``tally.stack.search_bridge``) on
the stack's public search port makes up the difference, so the product never knows. The engine
listens on internal ports of its own: HTTP on the public port plus ``HTTP_OFFSET``, transport
on the public port plus ``TRANSPORT_OFFSET`` (19200 -> 19201 and 19300 for ``make run``).
"""

from __future__ import annotations

import json
import shutil
import urllib.request

from kernel.settings import Settings
from tally.stack.base import Server
from tally.stack.java import FILES, classpath, ensure_java, jars

HTTP_OFFSET = 1
TRANSPORT_OFFSET = 100
HEAP = "512m"


def engine_port(public_port: int) -> int:
    """The engine's own HTTP port behind the bridge on ``public_port``."""
    return public_port + HTTP_OFFSET


class OpenSearch(Server):
    """One OpenSearch node; ready when the cluster health is yellow or green."""

    name = "opensearch"
    start_seconds = 120.0

    def __init__(self, settings: Settings, public_port: int) -> None:
        super().__init__(settings, engine_port(public_port))
        self.transport_port = public_port + TRANSPORT_OFFSET

    @property
    def ports(self) -> list[int]:
        return [self.port, self.transport_port]

    def answers(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/_cluster/health?wait_for_status=yellow&timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3) as reply:
                return json.loads(reply.read()).get("status") in ("yellow", "green")
        except (OSError, ValueError):
            return False

    def install(self) -> None:
        ensure_java()
        jars("search", "opensearch.version")

    def data_location(self) -> str:
        return str(self.home / "data")

    def launch(self) -> None:
        java, libs = ensure_java(), jars("search", "opensearch.version")
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / "search-log4j2.properties", config / "log4j2.properties")
        (config / "opensearch.yml").touch()
        tmp = self.home / "tmp"
        tmp.mkdir(exist_ok=True)
        self.spawn(
            [
                java,
                f"-Xms{HEAP}",
                f"-Xmx{HEAP}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Djava.io.tmpdir={tmp}",
                "-Dlog4j2.formatMsgNoLookups=true",
                "-Dio.netty.allocator.numDirectArenas=0",
                "-cp",
                classpath(libs),
                str(FILES / "SearchNode.java"),
                str(self.home),
                str(self.port),
                str(self.transport_port),
            ]
        )
