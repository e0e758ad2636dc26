"""Commands packed by hiredis are the bytes redis-py's own packer makes, and what hiredis cannot
pack is left to redis-py (with its errors)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from kernel.redis_client import hiredis_packing

_Packing = hiredis_packing(Connection)

argument = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    st.binary(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.lists(argument, max_size=40))
def test_hiredis_packs_the_bytes_redis_py_packs(args: list[object]) -> None:
    command = ("EVALSHA", *args)
    ours = b"".join(_Packing().pack_command(*command))
    assert ours == b"".join(Connection().pack_command(*command))


@pytest.mark.parametrize("value", [None, True, False])
def test_values_hiredis_refuses_get_redis_pys_error(value: object) -> None:
    with pytest.raises(DataError):
        _Packing().pack_command("SET", "k", value)


def test_a_command_name_of_two_words_is_split_as_redis_py_does() -> None:
    assert _Packing().pack_command("CONFIG GET", "maxmemory") == Connection().pack_command(
        "CONFIG GET", "maxmemory"
    )


def test_the_packing_class_keeps_the_transport_and_is_made_once() -> None:
    tls = hiredis_packing(SSLConnection)
    assert issubclass(tls, SSLConnection)
    assert hiredis_packing(SSLConnection) is tls
    assert hiredis_packing(tls) is tls
