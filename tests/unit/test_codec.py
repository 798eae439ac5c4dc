"""The codec: what round-trips, what is refused, and that garbage never crashes the decoder."""

from __future__ import annotations

import pickle
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient.errors import CheckpointError, CorruptCheckpoint
from resilient.storage.codec import MsgpackSerializer, decode, encode, encode_state, inflate, read_head

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | \
    st.text() | st.binary()
states = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.text() | st.integers(-1000, 1000) | st.tuples(st.integers(-1000, 1000), st.text()), inner, max_size=5),
    max_leaves=30,
)


@given(states)
def test_any_msgpackable_state_round_trips(state):
    """Whatever msgpack can hold comes back equal after save and load."""
    assert decode(encode_state(state)) == state


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    """Random bytes either decode or raise CorruptCheckpoint, nothing else."""
    try:
        decode(data)
    except CorruptCheckpoint:
        pass


def test_pickle_payload_is_corrupt_not_executed():
    """RQ's serializer refuses pickle bytes instead of unpickling them."""
    with pytest.raises(CorruptCheckpoint):
        MsgpackSerializer.loads(pickle.dumps(("os.system", None, ("true",), {})))


@pytest.mark.parametrize("state, path", [
    ({"rows": [1, 2, 3, {4}]}, "state['rows'][3]: set is not serializable"),
    ({"when": object()}, "state['when']: object is not serializable"),
    ([2**80], "state[0]: int is too large"),
])
def test_unserializable_value_names_its_path(state, path):
    """The error says where the bad value is."""
    with pytest.raises(CheckpointError, match=path.replace("[", r"\[").replace("]", r"\]")):
        encode_state(state)


def test_tuple_keys_round_trip():
    """A map with tuple keys loads back as it was saved (msgpack stores the keys as arrays)."""
    state = {(1, ("a", 2)): "x", "plain": [1, 2]}
    assert decode(encode_state(state)) == state


def test_oversize_state_is_refused_with_sizes():
    """A state above the cap fails at save, naming both sizes."""
    with pytest.raises(CheckpointError, match=r"state is 2.0 MiB encoded, above the 1.0 MiB cap"):
        encode_state(b"x" * (2 * 1024 * 1024), max_bytes=1024 * 1024)


def test_oversize_record_is_corrupt_on_read():
    with pytest.raises(CorruptCheckpoint, match="above"):
        decode(encode(b"x" * 100), max_bytes=10)


def test_inflate_stops_at_the_cap():
    """A zlib bomb is refused once it passes the cap, not inflated whole; data that is not zlib passes as is."""
    bomb = zlib.compress(bytes(64 * 1024 * 1024), 9)
    with pytest.raises(CorruptCheckpoint, match="inflates to more than the 1.0 MiB cap"):
        inflate(bomb, max_bytes=1024 * 1024)
    assert inflate(zlib.compress(b"small"), max_bytes=1024) == b"small"
    assert inflate(b"\x94 not zlib") == b"\x94 not zlib"


def test_read_head_reads_the_name_alone():
    """The function name comes out of a call payload; anything not shaped like a call is CorruptCheckpoint."""
    assert read_head(encode(["jobs.fn", None, [[]] * 1000, {}]), 4) == "jobs.fn"
    for bad in (encode([["jobs.fn"], None, [], {}]), encode(["jobs.fn", None]), encode("x" * 2000),
                pickle.dumps(("os.system",)), b""):
        with pytest.raises(CorruptCheckpoint):
            read_head(bad, 4)
