"""Raw Engine.IO v4 over HTTP and WebSocket, the way a protocol test suite speaks it (no client library)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import requests
import websocket

from tests.security.attack import WAIT, serving  # noqa: F401 - re-exported for the protocol modules


def base(server: Any, query: str = "") -> str:
    return server.url + "/socket.io/?EIO=4&transport=polling" + query


def handshake(server: Any, http: Any = requests) -> tuple[str, dict[str, Any]]:
    """Open a long-polling session: (sid, the OPEN packet's fields)."""
    opened = http.get(base(server), timeout=WAIT)
    assert opened.status_code == 200, opened.text
    assert opened.text.startswith("0{"), opened.text
    fields = json.loads(opened.text[1:])
    return fields["sid"], fields


def get(server: Any, sid: str, http: Any = requests, timeout: float = WAIT) -> requests.Response:
    return http.get(base(server, f"&sid={sid}"), timeout=timeout)


def post(server: Any, sid: str, body: str | bytes, http: Any = requests, **kwargs: Any) -> requests.Response:
    return http.post(base(server, f"&sid={sid}"), data=body, timeout=WAIT, **kwargs)


class Background:
    """A request run in a thread: `result()` waits for its response (or its exception)."""

    def __init__(self, call: Any, *args: Any, **kwargs: Any):
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.finished_at: float | None = None

        def run() -> None:
            try:
                self._value = call(*args, **kwargs)
            except BaseException as exc:  # handed to the test thread by result()
                self._error = exc
            finally:
                self.finished_at = time.monotonic()
                self._done.set()

        threading.Thread(target=run, daemon=True).start()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float = WAIT) -> Any:
        assert self._done.wait(timeout), f"no answer within {timeout}s"
        if self._error is not None:
            raise self._error
        return self._value


def ws_open(server: Any, sid: str | None = None, query: str | None = None) -> websocket.WebSocket:
    """A raw WebSocket on the Engine.IO path (with `sid`: an upgrade of that session)."""
    url = server.url.replace("http://", "ws://") + "/socket.io/?"
    url += query if query is not None else "EIO=4&transport=websocket" + (f"&sid={sid}" if sid else "")
    return websocket.create_connection(url, timeout=WAIT)


def ws_closed(ws: websocket.WebSocket, timeout: float = WAIT) -> bool:
    """True if the server closes the WebSocket (close frame or end of stream) within `timeout`,
    whatever else arrives first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            opcode, _ = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return True
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return True
    return False


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raw_request(server: Any, request: bytes, timeout: float = WAIT) -> bytes:
    """Send raw bytes on a fresh connection; what the server answers until it closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except TimeoutError:
            pass
        return received


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False
