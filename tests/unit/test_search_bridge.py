"""The bridge's nginx configuration rewrites the client's media types and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from tally.stack.search_bridge import MEDIA_TYPES, nginx_conf


def test_the_bridge_maps_both_compatible_media_types_to_the_plain_ones() -> None:
    conf = nginx_conf(Path("/data/bridge"), 19200, 19201, None)
    for header in ("accept", "content_type"):
        block = re.search(rf"map \$http_{header} \$\w+ \{{(.*?)\}}", conf, re.S)
        assert block is not None, conf
        rules = block.group(1)
        assert '"~*vnd\\.elasticsearch\\+x-ndjson" "application/x-ndjson";' in rules
        assert '"~*vnd\\.elasticsearch\\+json" "application/json";' in rules
        assert f"default $http_{header};" in rules  # anything else passes as it came
    # The more specific ndjson rule must come first: nginx takes the first matching regex.
    assert list(MEDIA_TYPES.values()) == ["application/x-ndjson", "application/json"]


def test_the_bridge_listens_on_the_public_port_and_forwards_to_the_engine_on_loopback() -> None:
    conf = nginx_conf(Path("/data/bridge"), 29200, 29201, "root")
    assert conf.startswith("user root;\n")
    assert "listen 127.0.0.1:29200;" in conf
    assert "server 127.0.0.1:29201;" in conf
    assert "add_header X-Elastic-Product Elasticsearch always;" in conf
    assert "client_max_body_size 0;" in conf  # bulk bodies of any size
    assert "user " not in nginx_conf(Path("/d"), 1, 2, None)
