"""msgpack in and out, with limits: arguments, results and checkpoints. No pickle anywhere."""

from __future__ import annotations

import io
import zlib
from typing import Any, cast

import msgpack

from ..config import format_size
from ..errors import CheckpointError, CorruptCheckpoint

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 16 * MiB
_SCALARS = (type(None), bool, int, float, str, bytes, bytearray)
_packer_options = {"use_bin_type": True, "datetime": False}


def encode(value: Any) -> bytes:
    """msgpack bytes of `value`; TypeError/OverflowError/ValueError when it holds something msgpack can't."""
    return cast(bytes, msgpack.packb(value, **_packer_options))


def encode_state(state: Any, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "state") -> bytes:
    """Encode a value a user handed us; CheckpointError names the offending path or the size."""
    try:
        data = encode(state)
    except (TypeError, OverflowError, ValueError):
        path, problem = find_unencodable(state, what)
        raise CheckpointError(f"{path}: {problem}", path) from None
    if len(data) > max_bytes:
        raise CheckpointError(
            f"{what} is {format_size(len(data))} encoded, above the {format_size(max_bytes)} cap "
            "(keep less in the checkpoint, or raise max_checkpoint_bytes)",
            what,
        )
    return data


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, key: str = "") -> Any:
    """Decode bytes we stored; anything malformed or oversized is CorruptCheckpoint, never a crash."""
    return _unpack(data, max_bytes, key, raw=False)


def decode_fields(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, key: str = "") -> dict[bytes, bytes]:
    """A map of byte strings (an event written by Lua, whose values may hold msgpack of their own);
    CorruptCheckpoint for anything else."""
    value = _unpack(data, max_bytes, key, raw=True)
    if not isinstance(value, dict) or not all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in value.items()):
        raise CorruptCheckpoint("expected a map of strings", key)
    return value


def _unpack(data: bytes, max_bytes: int, key: str, raw: bool) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise CorruptCheckpoint(f"expected bytes, found {type(data).__name__}", key)
    if len(data) > max_bytes:
        raise CorruptCheckpoint(f"record is {format_size(len(data))}, above the {format_size(max_bytes)} cap", key)
    try:  # unpackb sets its length limits from len(data), which the check above bounds
        return msgpack.unpackb(data, raw=raw, strict_map_key=False, timestamp=0, object_pairs_hook=_map)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptCheckpoint(f"not valid msgpack ({type(exc).__name__}: {exc})", key) from None


def inflate(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, key: str = "") -> bytes:
    """zlib-inflate `data`, stopping past `max_bytes` (a 400 KB bomb would be 400 MB): CorruptCheckpoint
    then. Data that is not zlib is returned as it is, as RQ does."""
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(data, max_bytes + 1)
    except zlib.error:
        return data
    if len(inflated) > max_bytes:
        raise CorruptCheckpoint(f"record inflates to more than the {format_size(max_bytes)} cap", key)
    return inflated if inflater.eof else data  # a truncated stream: RQ, too, takes the bytes as they are


_STR_MARKERS = {*range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB}  # msgpack fixstr, str 8, str 16, str 32


def read_head(data: bytes, length: int, max_str: int = 1024, key: str = "") -> str:
    """The first item of `data`, a msgpack array of `length` items, when that item is a string; the rest is
    not decoded (a few MB of arguments can decode to GBs of objects). CorruptCheckpoint otherwise."""
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, max_str_len=max_str)
    try:
        if unpacker.read_array_header() != length:
            raise ValueError(f"not an array of {length} items")
        if data[unpacker.tell()] not in _STR_MARKERS:
            raise ValueError("its first item is not a string")
        return str(unpacker.unpack())
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptCheckpoint(f"not valid msgpack ({type(exc).__name__}: {exc})", key) from None


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack turns tuple keys into arrays; make them tuples again so the map can be rebuilt."""
    return {_hashable(key): value for key, value in pairs}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def find_unencodable(value: Any, path: str = "state") -> tuple[str, str]:
    """Walk `value` to the first part msgpack cannot encode: (path, what is wrong)."""
    if isinstance(value, bool) or value is None or isinstance(value, (float, str, bytes, bytearray)):
        return path, "is not serializable"
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return path, "is not serializable"
        return path, "int is too large for msgpack (more than 64 bits)"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not _encodes(item):
                return find_unencodable(item, f"{path}[{index}]")
        return path, "is not serializable"
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(key):
                return find_unencodable(key, f"{path} key {key!r}")
            if not _encodes(item):
                return find_unencodable(item, f"{path}[{key!r}]")
        return path, "is not serializable"
    return path, f"{type(value).__name__} is not serializable (use dict, list, str, bytes, int, float, bool, None)"


def _encodes(value: Any) -> bool:
    try:
        encode(value)
    except (TypeError, OverflowError, ValueError):
        return False
    return True


class MsgpackSerializer:
    """RQ serializer (an object with dumps/loads) built on the codec: replaces RQ's pickle default."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return encode(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return decode(bytes(data))
