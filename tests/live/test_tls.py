"""Nexus serving TLS itself (the Procfile's gunicorn with a certificate and key): WebSocket frames go
through TLS both ways, and a connection stays on WebSocket, answers events and gets broadcasts."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.attack import frame, ping_then_read_late
from tests.support import services
from tests.support.live import LiveServerFactory

pytestmark = [pytest.mark.live, pytest.mark.node,
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]
SCRIPT = services.ROOT / "tests" / "js" / "tls.mjs"
WAIT = 15


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(base)
    factory = LiveServerFactory(base, secret=secrets.token_urlsafe(40))
    try:
        url, seeder = factory.database()
        seeder.user("tina")
        seeder.user("tom")
        server = factory.start(url, kind="procfile", wait=False,
                               env={"GUNICORN_CMD_ARGS": f"--certfile {cert} --keyfile {key}"})
        server.url = server.url.replace("http://", "https://")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        deadline = time.monotonic() + 30
        while True:
            assert server.process.poll() is None, server.log()
            try:
                if requests.get(server.url + "/health", timeout=1, verify=False).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        server.seeder = seeder
        yield server
    finally:
        factory.stop_all()


def test_a_websocket_over_tls_answers_events_and_gets_broadcasts(tls_server):
    """Driven by the official JavaScript client: python-engineio's threaded client reads and
    writes one SSL socket from two threads and drops wss:// connections now and then by itself."""
    services.require("node")
    contents = [str(n) * 4000 for n in range(6)]
    scenario = {
        "url": tls_server.url,
        "tokens": {"sender": tls_server.seeder.token("tina"), "receiver": tls_server.seeder.token("tom")},
        "contents": contents,
        "timeoutMs": WAIT * 1000,
    }
    result = subprocess.run([shutil.which("node"), str(SCRIPT), json.dumps(scenario)], cwd=services.ROOT,
                            capture_output=True, text=True, timeout=2 * WAIT + 10)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["error"] is None, (report["error"], tls_server.log()[-3000:])
    # Never a silent fall-back to long-polling.
    assert report["transports"] == {"sender": "websocket", "receiver": "websocket"}
    # Acks and the pong events they come with: many frames each way.
    assert [(ping["success"], ping["clientTimestamp"]) for ping in report["pings"]] == [(True, n) for n in range(20)]
    assert report["pongs"] >= 1
    assert [joined["success"] for joined in report["joined"]] == [True, True]
    assert all(sent["success"] for sent in report["sent"]), report["sent"]
    assert report["received"] == contents
    # An ack larger than one TLS record (16 KiB): the history page with the six messages.
    assert report["history"]["success"] is True and sorted(report["history"]["contents"]) == contents


def test_a_failed_tls_handshake_is_one_client_error_line_and_the_server_goes_on(tls_server):
    """A port scanner or a TCP health check (connect, then close) and a client speaking plain HTTP
    to the TLS port: each is refused without a traceback, and HTTPS is served as before."""
    host, port = tls_server.url.removeprefix("https://").rsplit(":", 1)
    for _ in range(3):
        socket.create_connection((host, int(port)), timeout=5).close()
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET /health HTTP/1.1\r\nHost: nexus\r\n\r\n")
        plain.settimeout(5)
        try:
            while plain.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    assert requests.get(tls_server.url + "/health", timeout=5, verify=False).status_code == 200
    deadline = time.monotonic() + WAIT
    while "client error tls_handshake_failed" not in tls_server.log():
        assert time.monotonic() < deadline, tls_server.log()[-3000:]
        time.sleep(0.05)
    log = tls_server.log()
    assert "Traceback" not in log and "SSLEOFError" not in log, log[-3000:]


def test_a_client_that_reads_late_over_tls_still_gets_all_that_was_sent_before_the_close(tls_server):
    # As over plain TCP (tests/protocol/test_idle_reader.py): a small receive window and nothing read
    # while the client's Engine.IO close packet ends the session, more frames behind it: the answers
    # sent before the end, then the close frame, still reach the client.
    host, port = tls_server.url.removeprefix("https://").rsplit(":", 1)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(WAIT)
    raw.connect((host, int(port)))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(raw)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, buffer = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(frame(0x1, b"40"))
    try:
        acks, closing = ping_then_read_late(sock, buffer, pings=2000)
    except (ssl.SSLError, ConnectionResetError) as exc:  # the end of the stream without a close frame
        raise AssertionError(f"the connection ended with {exc!r}") from None
    sock.close()
    assert len(acks) == 2000
    assert closing is not None and struct.unpack("!H", closing[:2])[0] == 1000
