"""TypeScript types for socket.io-client, made from the event catalogue: `python -m nexus.typescript`.

Writes clients/typescript/index.d.ts (`--check` only compares, and exits 1 when the file is stale):
the payload and ack types of every event, and per namespace the `ServerToClientEvents` and
`ClientToServerEvents` maps that `Socket<ServerToClientEvents, ClientToServerEvents>` takes.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from nexus.errors import CATALOGUE as ERROR_CATALOGUE
from nexus.realtime import catalogue
from nexus.realtime.catalogue import ClientEvent, NamespaceEvents

OUTPUT = Path(__file__).resolve().parent.parent / "clients" / "typescript" / "index.d.ts"
IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*\Z")
INDENT = "  "

HEADER = """\
// Nexus Socket.IO events for socket.io-client: payloads, acks, and each namespace's event maps.
// Generated from the event catalogue (nexus/realtime/catalogue.py) by `python -m nexus.typescript`;
// do not edit by hand.
import type { Socket } from "socket.io-client";
"""

ACK_TYPES = """\
/** A refusal: a stable code, a message safe to show, and optional details. */
export interface NexusError<C extends ErrorCode = ErrorCode> {
  code: C;
  message: string;
  details?: unknown;
  /** When to retry, in milliseconds (RATE_LIMITED, UNAVAILABLE). */
  retryAfterMs?: number;
}

/** A success ack: `success: true` and the event's fields. */
export type Done<T> = { success: true } & T;

/** A refusal ack, with the codes the event may be refused with. */
export interface Refused<C extends ErrorCode = ErrorCode> {
  success: false;
  error: NexusError<C>;
}

/** What every client event's ack callback receives. */
export type Ack<T, C extends ErrorCode = ErrorCode> = Done<T> | Refused<C>;
"""


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part)


def literal(value: Any) -> str:
    return json.dumps(value)


def ts_type(schema: dict[str, Any], depth: int = 0) -> str:
    """The TypeScript type of a JSON Schema (the subset the catalogue's schemas use)."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        return " | ".join(literal(value) for value in schema["enum"])
    for key, joiner in (("anyOf", " | "), ("oneOf", " | "), ("allOf", " & ")):
        if key in schema:
            return joiner.join(_grouped(ts_type(part, depth)) for part in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_grouped(ts_type({**schema, "type": one}, depth)) for one in kind)
    if kind == "string":
        return "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "null":
        return "null"
    if kind == "array":
        return f"{_grouped(ts_type(schema.get('items', {}), depth))}[]"
    if kind == "object" or "properties" in schema:
        return _object(schema, depth)
    return "unknown"


def _grouped(text: str) -> str:
    return f"({text})" if (" | " in text or " & " in text) and not text.startswith("{") else text


def _object(schema: dict[str, Any], depth: int) -> str:
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    if not properties:
        values = ts_type(extra, depth) if isinstance(extra, dict) else "unknown"
        return f"{{ [key: string]: {values} }}"
    pad = INDENT * (depth + 1)
    required = set(schema.get("required", ()))
    lines = ["{"]
    for name, prop in properties.items():
        lines.extend(_doc(prop, pad))
        key = name if IDENTIFIER.match(name) else literal(name)
        optional = "" if name in required else "?"
        lines.append(f"{pad}{key}{optional}: {ts_type(prop, depth + 1)};")
    if isinstance(extra, dict):
        lines.append(f"{pad}[key: string]: {ts_type(extra, depth + 1)};")
    lines.append(INDENT * depth + "}")
    return "\n".join(lines)


def _doc(schema: dict[str, Any], pad: str) -> list[str]:
    text = schema.get("description") or schema.get("summary")
    return [f"{pad}/** {text.replace('*/', '* /')} */"] if text else []


def _declare(name: str, schema: dict[str, Any]) -> str:
    body = ts_type(schema)
    if body.startswith("{") and "[key: string]" not in body.split("\n", 1)[0]:
        return f"export interface {name} {body}"
    return f"export type {name} = {body};"


class _Names:
    """The declarations made so far: two with one name would make index.d.ts invalid."""

    def __init__(self, *taken: str):
        self.taken = set(taken)

    def __call__(self, name: str) -> str:
        if name in self.taken:
            raise ValueError(f"two TypeScript declarations named {name}")
        self.taken.add(name)
        return name


def render() -> str:
    """The whole index.d.ts."""
    described = catalogue.described()
    claim = _Names("ErrorCode", "NexusError", "Done", "Refused", "Ack", "Socket")
    codes = " | ".join(literal(code) for code in ERROR_CATALOGUE)
    out = [HEADER, f"/** Every refusal code (nexus/errors.py). */\nexport type ErrorCode = {codes};\n", ACK_TYPES]
    out.append("// -- shapes -------------------------------------------------------------------\n")
    for name in sorted(described.components):
        out.extend(_doc(described.components[name], ""))
        out.append(_declare(claim(name), described.components[name]) + "\n")
    out.append("// -- what clients send, and their acks --------------------------------------------\n")
    for event in catalogue.client_events():
        out.extend(_event_types(event, described, claim))
    out.append("// -- event maps, per namespace ---------------------------------------------------\n")
    maps = []
    for namespace in catalogue.NAMESPACES.values():
        prefix = pascal(catalogue.short_name(namespace.name))
        names = claim(f"{prefix}ClientToServerEvents"), claim(f"{prefix}ServerToClientEvents")
        out.extend(_event_maps(namespace, *names, described))
        maps.append((namespace.name, *names))
    out.extend(_sockets(maps, claim))
    return "\n".join(out) + "\n"


def _event_types(event: ClientEvent, described: catalogue.Described, claim: _Names) -> list[str]:
    base = pascal(event.name)
    lines = []
    payload = described.payloads[event.name]
    if payload is not None:
        lines.append(f"/** `{event.name}`'s payload. */")
        lines.append(f"export type {claim(base + 'Payload')} = {ts_type(payload)};\n")
    codes = " | ".join(literal(code) for code in event.error_codes)
    reply = ts_type(described.replies[event.name])
    lines.append(f"/** `{event.name}`'s ack: refused with {', '.join(event.error_codes)}. */")
    lines.append(f"export type {claim(base + 'Response')} = Ack<{reply}, {codes}>;\n")
    return lines


def _event_maps(namespace: NamespaceEvents, client_map: str, server_map: str,
                described: catalogue.Described) -> list[str]:
    lines = [f"/** What clients send on `{namespace.name}`: {namespace.summary} */",
             f"export interface {client_map} {{"]
    for event in namespace.receives:
        lines.append(f"{INDENT}/** {event.summary} */")
        lines.append(f"{INDENT}{event.name}: {_client_signature(event)};")
    lines += ["}\n", f"/** What the server sends on `{namespace.name}`. */", f"export interface {server_map} {{"]
    for event in namespace.sends:
        payload = ts_type(described.server_payloads[event.name])
        lines.append(f"{INDENT}/** {event.summary} To: {'; '.join(event.rooms)}. */")
        lines.append(f"{INDENT}{event.name}: (payload: {payload}) => void;")
    lines.append("}\n")
    return lines


def _sockets(maps: list[tuple[str, str, str]], claim: _Names) -> list[str]:
    default = maps[0]
    lines = [
        "/** The default namespace `/`, which front ends use: `Socket<ServerToClientEvents, ClientToServerEvents>`. */",
        f"export type {claim('ClientToServerEvents')} = {default[1]};",
        f"export type {claim('ServerToClientEvents')} = {default[2]};\n",
        "/** Each namespace's event maps, by its name. */",
        f"export interface {claim('NamespaceEvents')} {{",
    ]
    for name, client_map, server_map in maps:
        lines.append(f'{INDENT}"{name}": {{ clientToServer: {client_map}; serverToClient: {server_map} }};')
    lines += [
        "}\n",
        '/** A socket.io-client socket of a namespace: `const chat: NexusSocket<"/chat"> = io(url + "/chat")`. */',
        f"export type {claim('NexusSocket')}<N extends keyof NamespaceEvents = \"/\"> = "
        'Socket<NamespaceEvents[N]["serverToClient"], NamespaceEvents[N]["clientToServer"]>;',
    ]
    return lines


def _client_signature(event: ClientEvent) -> str:
    """The event's function type: its payload (if it has one) and ack; one tuple per way of calling it
    where the payload or the ack may be left out (socket.io-client's `timeout().emit` then still
    types the ack's error argument, which an optional parameter would not)."""
    base = pascal(event.name)
    ack = f"ack: (response: {base}Response) => void"
    payload = f"payload: {base}Payload"
    if event.payload is None:
        calls = [[ack]]
    elif event.payload.optional:
        calls = [[ack], [payload, ack]]
    else:
        calls = [[payload, ack]]
    if event.ack_optional:
        calls = [call[:-1] for call in calls] + calls
    if len(calls) == 1:
        return f"({', '.join(calls[0])}) => void"
    return f"(...args: {' | '.join('[' + ', '.join(call) + ']' for call in calls)}) => void"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nexus.typescript", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m nexus.typescript", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
