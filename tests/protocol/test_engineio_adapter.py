"""The points where nexus.protocol.polling meets python-engineio's Server: a release that moves one fails here."""
from __future__ import annotations

import engineio
import pytest
from engineio import packet as eio_packet

from nexus.protocol.polling import EngineFront, EngineSession, _EngineIO


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


@pytest.fixture
def eio():
    return engineio.Server(async_mode="gevent", ping_interval=25, ping_timeout=20)


@pytest.fixture
def session(eio):
    front = EngineFront(lambda environ, start_response: [], eio, "socket.io", ping_interval_ms=25000,
                        ping_timeout_ms=20000, max_payload=1000, origin_allowed=None)
    sid = front.engine.new_sid()
    session = EngineSession(front, sid)
    front.engine.sessions()[sid] = session
    return session


def test_the_handlers_registered_with_on_are_found_by_event_name(eio):
    engine = _EngineIO(eio)
    handlers = {name: _Recorder() for name in ("connect", "message", "disconnect")}
    for name, handler in handlers.items():
        eio.on(name, handler)
    for name, handler in handlers.items():
        assert engine.handler(name) is handler


def test_send_packet_and_send_reach_the_session_in_the_sockets_table(eio, session):
    eio.send_packet(session.sid, eio_packet.Packet(eio_packet.MESSAGE, "a"))
    eio.send(session.sid, "b")
    assert [pkt.encode() for pkt in session.outbox.take()] == ["4a", "4b"]


def test_get_session_and_transport_read_the_session(eio, session):
    eio.get_session(session.sid)["user"] = 7
    assert session.session == {"user": 7}
    assert eio.transport(session.sid) == "polling"
    session.upgraded = True
    assert eio.transport(session.sid) == "websocket"


def test_disconnect_closes_the_session_with_the_server_reason_and_releases_it(eio, session):
    gone = _Recorder()
    eio.on("disconnect", gone)
    eio.disconnect(session.sid)
    assert session.closed
    assert gone.calls == [(session.sid, eio.reason.SERVER_DISCONNECT)]
    assert session.sid not in eio.sockets
    with pytest.raises(KeyError):
        eio.get_session(session.sid)


def test_the_reasons_python_socketio_passes_on_exist(eio):
    for name in ("SERVER_DISCONNECT", "CLIENT_DISCONNECT", "PING_TIMEOUT", "TRANSPORT_CLOSE", "TRANSPORT_ERROR"):
        assert isinstance(getattr(eio.reason, name), str)
    assert isinstance(eio.generate_id(), str)


def test_polling_packets_encode_as_the_protocol_says(session):
    assert eio_packet.Packet(eio_packet.MESSAGE, b"\x01\x02\x03\x04").encode(b64=True) == "bAQIDBA=="
    assert eio_packet.Packet(eio_packet.OPEN, {"a": 1}).encode() == '0{"a":1}'


def test_a_session_whose_pong_is_overdue_is_unknown_before_its_close_has_run(eio):
    """The heartbeat's timeout hands the close (the application's disconnect handlers) to a greenlet
    of its own; a request in between must already find the session gone (the protocol suites poll
    right at interval + timeout), not be served by a session that is about to close."""
    from nexus.protocol.websocket import Pinger

    front = EngineFront(lambda environ, start_response: [], eio, "socket.io", ping_interval_ms=25000,
                        ping_timeout_ms=20000, max_payload=1000, origin_allowed=None)
    closes = []
    front.pinger = Pinger(0.0, 0.0, eio.reason.PING_TIMEOUT, spawn=lambda *args, **kwargs: closes.append(args))
    sid = front.engine.new_sid()
    session = EngineSession(front, sid)
    front.engine.sessions()[sid] = session
    assert front._open_session(sid) is session
    front.pinger._fire(session, Pinger.PING)  # the PING goes out; no PONG comes
    assert front._open_session(sid) is session
    front.pinger._fire(session, Pinger.TIMEOUT)
    assert closes and not session.closed  # the close has not run yet ...
    assert front._open_session(sid) is None  # ... and the session is over for every request already
