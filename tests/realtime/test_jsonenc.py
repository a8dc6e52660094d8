"""Socket.IO packets are encoded with orjson."""
from __future__ import annotations

import datetime as dt

import pytest
from socketio import packet

from nexus.extensions import socketio
from nexus.realtime import jsonenc
from nexus.protocol.packets import JsonPacket


def test_server_packets_use_orjson(app):
    assert socketio.server.packet_class is JsonPacket and socketio.server.packet_class.json is jsonenc
    assert not JsonPacket.data_is_binary([{"users": [{"id": "1"}] * 3}])  # no walk of the payload
    encoded = packet.Packet(packet.EVENT, data=["room_message", {"id": 1, "content": "é✓"}]).encode()
    assert encoded == '2["room_message",{"id":1,"content":"é✓"}]'


def test_dumps_is_compact_text_and_tolerant_of_python_types():
    assert jsonenc.dumps({"a": [1, 2]}, separators=(",", ":")) == '{"a":[1,2]}'
    assert jsonenc.dumps({1: "x"}) == '{"1":"x"}'
    assert jsonenc.dumps({"s": {3}}) == '{"s":[3]}'
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert jsonenc.dumps({"t": when}) == '{"t":"2026-01-02T03:04:05+00:00"}'
    with pytest.raises(TypeError):
        jsonenc.dumps({"o": object()})


def test_loads_rejects_garbage():
    assert jsonenc.loads('{"a": 1}') == {"a": 1}
    with pytest.raises(jsonenc.JSONDecodeError):
        jsonenc.loads("{nope")
