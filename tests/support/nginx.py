"""nginx in front of Nexus instances, configured from deploy/nginx.conf (so the sample is what is tested)."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.support import services

SAMPLE = services.ROOT / "deploy" / "nginx.conf"


class Nginx:
    """deploy/nginx.conf with its upstream servers, listen port and pid file pointed at this test's."""

    def __init__(self, tmp_path: Path, upstream_ports: list[int]):
        services.require("nginx")
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = tmp_path / "nginx"
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        config = SAMPLE.read_text()
        # Each test instance gets a server line with the sample's own parameters (max_fails=...).
        found = re.search(r"(?m)^\s*server 127\.0\.0\.1:\d+( [^\n;]*)?;", config)
        assert found, "deploy/nginx.conf has no upstream server line"
        parameters = found.group(1) or ""
        servers = "\n".join(f"        server 127.0.0.1:{port}{parameters};" for port in upstream_ports)
        config, count = re.subn(r"(?m)^\s*server 127\.0\.0\.1:\d+[^\n]*;\n?(?:\s*server 127\.0\.0\.1:\d+[^\n]*;\n?)*",
                                servers + "\n", config)
        assert count == 1, "deploy/nginx.conf's upstream block changed shape"
        config = config.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        config = config.replace("pid /tmp/nexus-nginx.pid;", f"pid {self.prefix / 'nginx.pid'};")
        self.config_path = self.prefix / "nginx.conf"
        self.config_path.write_text(config)
        self.process = subprocess.Popen(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(self.config_path), "-p", str(self.prefix),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.prefix / "stderr.log", "wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("nginx did not start: " + (self.prefix / "stderr.log").read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
