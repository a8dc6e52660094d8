"""The benchmark's Flask-SocketIO peer: plain Flask-SocketIO on gevent-websocket, answering the events
the load generator uses the way the Node reference server (bench/node/server.js) does, with none of
Nexus's work (no token check, rate limit, validation or database).

Run under gunicorn's gevent-websocket worker, one process, as Flask-SocketIO documents it:

    gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1 \
        --chdir bench/peers --bind 127.0.0.1:PORT flask_peer:app

BENCH_PEER_REDIS_URL (with BENCH_PEER_CHANNEL) puts instances on a Redis message queue, so that a
room spans them (the equivalent of the Node server's Redis adapter). GET /health answers 200.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 - everything below must see the patched standard library
import time  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, request  # noqa: E402
from flask_socketio import SocketIO, emit, join_room  # noqa: E402

import reference  # noqa: E402 - bench/peers, gunicorn's --chdir

app = Flask(__name__)
socketio = SocketIO(
    app,
    async_mode="gevent",
    cors_allowed_origins="*",
    http_compression=False,
    ping_interval=25,
    ping_timeout=60,
    max_http_buffer_size=1_000_000,
    message_queue=os.environ.get("BENCH_PEER_REDIS_URL") or None,
    channel=os.environ.get("BENCH_PEER_CHANNEL", "flask-socketio-bench"),
)

_users: dict[str, str] = {}  # sid -> the user id the generator numbered the client with


@app.get("/health")
def health() -> tuple[dict[str, str], int]:
    return {"status": "ok"}, 200


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    user = str(auth["userId"]) if isinstance(auth, dict) and auth.get("userId") is not None else request.sid
    _users[request.sid] = user
    emit("connected", {"socketId": request.sid, "user": {"id": user}, "guest": False,
                       "timestamp": int(time.time() * 1000)})


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    _users.pop(request.sid, None)


@socketio.on("join_room")
def on_join_room(payload: Any = None) -> dict[str, Any]:
    room = reference.room_of(payload)
    if not isinstance(room, str) or not room:
        return reference.invalid("roomId")
    join_room(room)
    return reference.joined(room)


@socketio.on("send_message")
def on_send_message(payload: Any = None) -> dict[str, Any]:
    made = reference.new_message(payload, _users.get(request.sid, request.sid))
    if made is None:
        return reference.invalid("roomId, content")
    room, message = made
    emit("room_message", message, to=room)  # the sender too, as Nexus and the Node reference do
    return reference.sent(message)


@socketio.on("ping")
def on_ping(*_: Any) -> dict[str, Any]:
    return {"success": True, "timestamp": int(time.time() * 1000)}
