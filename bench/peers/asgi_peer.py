"""The benchmark's python-socketio ASGI peer: socketio.AsyncServer(async_mode="asgi") under uvicorn,
answering the events the load generator uses the way the Node reference server (bench/node/server.js)
does, with none of Nexus's work (no token check, rate limit, validation or database).

    uvicorn --app-dir bench/peers --host 127.0.0.1 --port PORT --ws websockets asgi_peer:app

BENCH_PEER_REDIS_URL (with BENCH_PEER_CHANNEL) puts instances on Redis through AsyncRedisManager, so
that a room spans them (the equivalent of the Node server's Redis adapter). GET /health answers 200.
"""
from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable

import socketio

import reference  # bench/peers, the app directory

_redis_url = os.environ.get("BENCH_PEER_REDIS_URL")
sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    http_compression=False,
    ping_interval=25,
    ping_timeout=60,
    max_http_buffer_size=1_000_000,
    client_manager=socketio.AsyncRedisManager(
        _redis_url, channel=os.environ.get("BENCH_PEER_CHANNEL", "asgi-socketio-bench")) if _redis_url else None,
)

_users: dict[str, str] = {}  # sid -> the user id the generator numbered the client with


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    user = str(auth["userId"]) if isinstance(auth, dict) and auth.get("userId") is not None else sid
    _users[sid] = user
    await sio.emit("connected", {"socketId": sid, "user": {"id": user}, "guest": False,
                                 "timestamp": int(time.time() * 1000)}, to=sid)


@sio.event
async def disconnect(sid: str, reason: Any = None) -> None:
    _users.pop(sid, None)


@sio.on("join_room")
async def join_room(sid: str, payload: Any = None) -> dict[str, Any]:
    room = reference.room_of(payload)
    if not isinstance(room, str) or not room:
        return reference.invalid("roomId")
    await sio.enter_room(sid, room)
    return reference.joined(room)


@sio.on("send_message")
async def send_message(sid: str, payload: Any = None) -> dict[str, Any]:
    made = reference.new_message(payload, _users.get(sid, sid))
    if made is None:
        return reference.invalid("roomId, content")
    room, message = made
    await sio.emit("room_message", message, to=room)  # the sender too, as Nexus and the Node reference do
    return reference.sent(message)


@sio.on("ping")
async def ping(sid: str, *_: Any) -> dict[str, Any]:
    return {"success": True, "timestamp": int(time.time() * 1000)}


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _health(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """GET /health for the driver; any other HTTP request that is not Socket.IO is a 404."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/health"
    body = b'{"status":"ok"}' if found else b""
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=_health)
