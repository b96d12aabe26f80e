"""TFRecord files and ``tf.train.Example`` protos in pure Python (no TensorFlow): the one owner of the format.

Written by ``ffem pack`` (``tfrecord_frame``, ``encode_example``), read by the
seed TFRecord source and ``ffem inspect --verify``. A TFRecord frame is:
length (uint64 LE), masked CRC32C of the length, payload, masked CRC32C of
the payload. CRC32C comes from ``google-crc32c`` when installed, else a
table implementation in Python (correct but slower).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

# ---------------------------------------------------------------- writing


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


try:
    from google_crc32c import value as crc32c
except ImportError:  # pragma: no cover - exercised only without the C extension
    _TABLE = _crc32c_table()

    def crc32c(data: bytes) -> int:
        """CRC-32C (Castagnoli) of ``data``, table-driven pure Python."""
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes) -> bytes:
    """One TFRecord: length (u64 LE), masked CRC32C of the length, payload, masked CRC32C."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + struct.pack("<I", masked_crc(payload))


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def _varint_bytes(value: int) -> bytes:
    """``value`` as a protobuf varint (two's complement in 64 bits when negative)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _delimited(field_number: int, payload: bytes) -> bytes:
    return _varint_bytes(field_number << 3 | 2) + _varint_bytes(len(payload)) + payload


def _bytes_feature_head(key_field: bytes, size: int) -> bytes:
    """Everything of one ``{key: BytesList[value]}`` map entry that precedes a ``size``-byte value.

    The value itself is not copied into nested messages: each level's length
    is computed from the sizes, and the caller joins head and value once.
    """
    value_head = b"\x0a" + _varint_bytes(size)  # BytesList.value
    list_head = b"\x0a" + _varint_bytes(len(value_head) + size)  # Feature.bytes_list
    feature_size = len(list_head) + len(value_head) + size
    feature_head = b"\x12" + _varint_bytes(feature_size)  # entry.value
    entry_size = len(key_field) + len(feature_head) + feature_size
    return b"\x0a" + _varint_bytes(entry_size) + key_field + feature_head + list_head + value_head


_ENCODED_KEY = _delimited(1, b"image/encoded")
_PATH_KEY = _delimited(1, b"image/path")


def encode_example(encoded: bytes, label: int, path: str) -> bytes:
    """A serialized ``tf.train.Example`` with the three pack features (protobuf wire format)."""
    path_bytes = path.encode()
    encoded_head = _bytes_feature_head(_ENCODED_KEY, len(encoded))
    label_entry = _delimited(
        1, _delimited(1, b"image/label") + _delimited(2, _delimited(3, _delimited(1, _varint_bytes(label))))
    )
    path_head = _bytes_feature_head(_PATH_KEY, len(path_bytes))
    size = len(encoded_head) + len(encoded) + len(label_entry) + len(path_head) + len(path_bytes)
    return b"".join((b"\x0a", _varint_bytes(size), encoded_head, encoded, label_entry, path_head, path_bytes))


# ---------------------------------------------------------------- reading


class FrameError(Exception):
    """A damaged frame: ``offset`` is its first byte in the file."""

    def __init__(self, offset: int, problem: str):
        super().__init__(f"record at byte {offset}: {problem}")
        self.offset = offset
        self.problem = problem


def read_frame(handle: BinaryIO, offset: int, check_data: bool = True) -> tuple[bytes, int] | None:
    """The payload of the frame at ``offset`` and the offset of the next; ``None`` at the end.

    Raises ``FrameError`` on a cut-off frame or a CRC mismatch.
    """
    handle.seek(offset)
    head = handle.read(12)
    if not head:
        return None
    if len(head) < 12:
        raise FrameError(offset, "the file ends inside the record header")
    length_bytes = head[:8]
    (length,) = struct.unpack("<Q", length_bytes)
    if struct.unpack("<I", head[8:])[0] != masked_crc(length_bytes):
        raise FrameError(offset, "the length's CRC does not match")
    body = handle.read(length + 4)
    if len(body) < length + 4:
        raise FrameError(offset, f"cut off: needs {length + 4} bytes, {len(body)} left")
    payload = body[:length]
    if check_data and struct.unpack("<I", body[length:])[0] != masked_crc(payload):
        raise FrameError(offset, "the data CRC does not match")
    return payload, offset + 12 + length + 4


def iter_frames(handle: BinaryIO, check_data: bool = True) -> Iterator[tuple[int, bytes]]:
    """``(offset, payload)`` of every frame; ``FrameError`` at the first damaged one."""
    offset = 0
    while (found := read_frame(handle, offset, check_data)) is not None:
        payload, following = found
        yield offset, payload
        offset = following


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """``(field number, wire type, value)`` of a protobuf message (varint and length-delimited)."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
            if pos > len(data):
                raise ValueError("truncated field")
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def parse_example(payload: bytes) -> dict[str, list]:
    """A serialized ``tf.train.Example`` as ``{feature name: list of bytes or ints or floats}``.

    Raises ``ValueError`` when the bytes are not an Example.
    """
    features: dict[str, list] = {}
    for number, _, features_bytes in _fields(payload):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features_bytes):
            if entry_number != 1:
                continue
            name, feature = "", b""
            for part_number, _, part in _fields(entry):
                if part_number == 1:
                    name = part.decode("utf-8", "replace")
                elif part_number == 2:
                    feature = part
            features[name] = _feature_values(feature)
    return features


def _feature_values(feature: bytes) -> list:
    values: list = []
    for kind, _, listed in _fields(feature):
        for _, wire, value in _fields(listed):
            if kind == 1:
                values.append(value)
            elif kind == 3 and wire == 2:  # packed int64
                pos = 0
                while pos < len(value):
                    number, pos = _varint(value, pos)
                    values.append(number - (1 << 64) if number >> 63 else number)
            elif kind == 3:
                values.append(value - (1 << 64) if value >> 63 else value)
            elif kind == 2 and wire == 2:
                values.extend(struct.unpack(f"<{len(value) // 4}f", value))
            elif kind == 2:
                values.append(struct.unpack("<f", value)[0])
    return values
