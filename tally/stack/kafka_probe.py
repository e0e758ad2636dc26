"""Is a Kafka broker ready? One Metadata request (v1) over a plain socket, no client library.

An open port is not a broker: a KRaft broker listens before it has registered with its
controller. A broker is ready when the metadata it answers lists the brokers expected.
"""

from __future__ import annotations

import socket
import struct

METADATA = 3
VERSION = 1
CLIENT_ID = b"tally-stack"


def _request(correlation_id: int) -> bytes:
    # Header v1 (api key, version, correlation id, client id), then an empty topic array: v1
    # reads it as "no topics" (-1 would be all), so the broker answers with its brokers only.
    body = struct.pack(">hhih", METADATA, VERSION, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    body += struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def parse_brokers(payload: bytes) -> set[int]:
    """The node ids in a Metadata v1 response (``payload`` after its size)."""
    offset = 4  # correlation id
    (count,) = struct.unpack_from(">i", payload, offset)
    offset += 4
    nodes = set()
    for _ in range(count):
        node_id, host_length = struct.unpack_from(">ih", payload, offset)
        offset += 6 + host_length + 4  # node id, host, port
        (rack_length,) = struct.unpack_from(">h", payload, offset)
        offset += 2 + max(rack_length, 0)
        nodes.add(node_id)
    return nodes


def brokers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> set[int]:
    """The node ids of the brokers the broker on ``host:port`` knows; empty when it does not
    answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_request(1))
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            return parse_brokers(_read_exactly(sock, size))
    except (OSError, struct.error):
        return set()
