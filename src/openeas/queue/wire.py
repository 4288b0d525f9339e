"""The queue's wire formats: the SDK's protobuf frames and the JSON form for curl and the CLI.

`eas_prediction` decodes `streaming.DataFrameProto {uint64 index = 1; map<string,string> tags = 2;
bytes data = 3; string message = 4}` and `DataFrameListProto {repeated DataFrameProto index = 1}`.
Encoding those two messages takes a few lines of protobuf wire format, so the queue server needs
no generated code and no protobuf runtime (whose versions the SDK pins).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from openeas.queue.items import Item

PROTOBUF_TYPE = "application/vnd.google.protobuf"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_frame(item: Item, message: str = "") -> bytes:
    out = bytearray(_varint(1 << 3) + _varint(item.index))
    for key, value in sorted(item.with_tags().items()):
        out += _field(2, _field(1, key.encode()) + _field(2, value.encode()))
    if item.data:
        out += _field(3, item.data)
    if message:
        out += _field(4, message.encode())
    return bytes(out)


def encode_frame_list(items: Iterable[Item]) -> bytes:
    return b"".join(_field(1, encode_frame(i)) for i in items)


def item_json(item: Item, *, with_state: bool = False) -> dict[str, Any]:
    """The JSON form: data in base64 (it may be any bytes), like EAS's JSON answers."""
    out: dict[str, Any] = {
        "index": item.index,
        "data": base64.b64encode(item.data).decode(),
        "tags": item.with_tags(),
    }
    if with_state:
        out.update(state=item.state, deliveries=item.deliveries, created_at=item.created_at)
    return out
