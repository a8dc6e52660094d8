"""The TypeScript types in clients/typescript: generated from the event catalogue, current, and usable."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nexus import typescript
from nexus.realtime import catalogue
from tests.support import services

PACKAGE = services.ROOT / "clients" / "typescript"
TYPED_CLIENT = services.ROOT / "tests" / "ts" / "typed_client.ts"
TSC = services.ROOT / "node_modules" / ".bin" / "tsc"


def test_the_committed_types_are_the_catalogue_s():
    committed = (PACKAGE / "index.d.ts").read_text(encoding="utf-8")
    assert committed == typescript.render(), "clients/typescript/index.d.ts is stale: run python -m nexus.typescript"


def test_the_generator_writes_and_checks(tmp_path):
    output = tmp_path / "index.d.ts"
    command = [sys.executable, "-m", "nexus.typescript", "--output", str(output)]
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=services.ROOT, timeout=60)
    assert stale.returncode == 1 and "stale" in stale.stderr
    written = subprocess.run(command, capture_output=True, text=True, cwd=services.ROOT, timeout=60)
    assert written.returncode == 0, written.stderr
    assert output.read_text(encoding="utf-8") == (PACKAGE / "index.d.ts").read_text(encoding="utf-8")
    current = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=services.ROOT, timeout=60)
    assert current.returncode == 0, current.stderr


def test_the_package_points_at_the_generated_file():
    package = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    assert package["name"] == "@nexus/client-types"
    assert (PACKAGE / package["types"]).is_file()
    assert "socket.io-client" in package["peerDependencies"]


def test_every_event_has_its_types():
    text = typescript.render()
    for namespace in catalogue.NAMESPACES.values():
        prefix = typescript.pascal(catalogue.short_name(namespace.name))
        client_map = text.split(f"export interface {prefix}ClientToServerEvents {{", 1)[1].split("\n}", 1)[0]
        server_map = text.split(f"export interface {prefix}ServerToClientEvents {{", 1)[1].split("\n}", 1)[0]
        assert [line.split(":")[0].strip() for line in client_map.splitlines() if "=>" in line] == [
            event.name for event in namespace.receives]
        assert [line.split(":")[0].strip() for line in server_map.splitlines() if "=>" in line] == [
            event.name for event in namespace.sends]


def test_the_typed_client_covers_every_namespace():
    """tests/ts/typed_client.ts lists every event of the maps it names (mapped types make tsc check that);
    here: it names the maps of every namespace."""
    source = TYPED_CLIENT.read_text(encoding="utf-8")
    for name in catalogue.NAMESPACES:
        prefix = typescript.pascal(catalogue.short_name(name))
        if name == catalogue.DEFAULT:
            assert "ClientToServerEvents]: () => void }" in source and ": ServerToClientEvents = {" in source
        else:
            assert f"keyof {prefix}ClientToServerEvents]" in source, name
            assert f": {prefix}ServerToClientEvents = {{" in source, name


@pytest.mark.node
def test_a_typed_socket_io_client_compiles_in_strict_mode():
    services.require("node")
    assert TSC.exists(), "node_modules/.bin/tsc is missing: run `npm ci` (typescript is a devDependency)"
    result = subprocess.run(
        [str(TSC), "-p", str(TYPED_CLIENT.parent / "tsconfig.json"), "--strict", "--noEmit"],
        capture_output=True, text=True, cwd=services.ROOT, timeout=300,
    )
    # typed_client.ts also holds `@ts-expect-error` lines (a wrong payload, a status that does not exist,
    # an event of another namespace): tsc fails if the types ever stop refusing them.
    assert result.returncode == 0, result.stdout + result.stderr
