"""Strings no database column can hold, in every place the REST API and the socket events take a
string: NUL (PostgreSQL refuses it in text) and unpaired UTF-16 surrogates (which no UTF-8
encoder, PostgreSQL's or SQLite's, can write). Each is answered with a 4xx or a success, never a
5xx (a socket event: an ack with a client error code), on whichever database the suite runs on.

The places come from the OpenAPI document and the event catalogue (every string path parameter,
query parameter and body property, and every string field of an event's payload), so a new route
or event is covered without touching this file. The JSON bodies are written by hand: a JSON
encoder would escape the surrogate the way a hostile client does not have to.
"""
from __future__ import annotations

import json
from typing import Any, Iterator
from urllib.parse import quote

import pytest

#: A NUL, and a lone high surrogate: JSON lets a client send either (as \\u0000 and \\ud800).
HOSTILE = {"nul": "ab\x00cd", "surrogate": "ab\ud800cd"}
HOSTILE_JSON = {"nul": '"ab\\u0000cd"', "surrogate": '"ab\\ud800cd"'}


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return set(kind)
    if kind:
        return {kind}
    kinds: set[str] = set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        kinds |= _types(option)
    return kinds


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _plain(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value the schema accepts, as plain as can be (the other fields of a request)."""
    schema = _resolve(document, schema)
    if "examples" in schema:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    kinds = _types(schema)
    if "string" in kinds:
        return "x" * max(1, schema.get("minLength", 1))
    if "integer" in kinds:
        return max(1, schema.get("minimum", 1))
    if "boolean" in kinds:
        return False
    if "array" in kinds:
        return []
    if "object" in kinds:
        return {}
    return None


def rest_cases(document: dict[str, Any], ids: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(method, path with the hostile marker, where, body) for each string a route takes."""
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            path_values = {p["name"]: ids.get(p["name"], 1) for p in parameters if p["in"] == "path"}

            def path(**override: str) -> str:
                values = {**path_values, **override}
                return template.format(**{name: quote(str(value), safe="") for name, value in values.items()})

            body_schema = _resolve(document, operation.get("requestBody", {}).get("content", {})
                                   .get("application/json", {}).get("schema", {}))
            properties = body_schema.get("properties", {})
            base_body = {name: _plain(document, properties[name]) for name in body_schema.get("required", [])}
            for parameter in parameters:
                if "string" not in _types(_resolve(document, parameter.get("schema", {}))):
                    continue
                if parameter["in"] == "path":
                    yield method, path(**{parameter["name"]: "\0MARK"}), f"path {parameter['name']}", base_body
                elif parameter["in"] == "query":
                    yield method, f"{path()}?{parameter['name']}=\0MARK", f"query {parameter['name']}", base_body
            for name, schema in properties.items():
                if "string" in _types(_resolve(document, schema)):
                    yield method, path(), f"body {name}", {**base_body, name: "\0MARK"}


@pytest.fixture
def world(app, make_user, token_for, client):
    admin = make_user("root", role="admin")
    alice = make_user("alice")
    token = token_for(admin)
    created = client.post("/api/rooms", json={"name": "general"}, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.get_json()
    return {"token": token, "ids": {"userId": alice.id, "room": "general", "roomId": "general", "id": 1}}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_no_rest_route_answers_a_hostile_string_with_a_server_error(client, world, kind):
    document = client.get("/api/openapi.json").get_json()
    cases = list(rest_cases(document, world["ids"]))
    assert len(cases) > 20, cases  # the document's routes were found
    answered = []
    for method, path, where, body in cases:
        raw_path = path.replace("%00MARK", quote(HOSTILE[kind].encode("utf-8", "surrogatepass"), safe=""))
        raw_path = raw_path.replace("\0MARK", quote(HOSTILE[kind].encode("utf-8", "surrogatepass"), safe=""))
        encoded = json.dumps(body).replace('"\\u0000MARK"', HOSTILE_JSON[kind])
        response = getattr(client, method)(
            raw_path, data=encoded if method != "get" else None,
            content_type="application/json" if method != "get" else None,
            headers={"Authorization": f"Bearer {world['token']}"},
        )
        answered.append((response.status_code, method.upper(), where, raw_path))
    failures = [case for case in answered if case[0] >= 500]
    assert not failures, "\n".join(" ".join(map(str, case)) for case in failures)


def _string_fields(payload: Any) -> list[str]:
    from marshmallow import fields

    return [field.data_key or name for name, field in payload.load_schema().fields.items()
            if isinstance(field, fields.String) and not field.dump_only]


def test_no_socket_event_answers_a_hostile_string_with_an_internal_error(app, make_user, token_for, socket_client,
                                                                         world):
    from nexus.realtime import catalogue

    admin = socket_client(token=world["token"])
    assert admin.emit("join_room", "general", callback=True)["success"]
    tried = []
    for namespace, described in catalogue.NAMESPACES.items():
        on = admin if namespace == "/" else socket_client(token=world["token"], namespace=namespace)
        for event in described.receives:
            if event.payload is None or event.name in ("authenticate",):
                continue
            names = _string_fields(event.payload)
            if event.payload.bare:
                names.append(None)  # the bare value itself: join_room("general")
            for name in names:
                # NUL only: the test client encodes with orjson, which writes no lone surrogate; raw
                # frames with one are in tests/security/test_malformed.py.
                for kind, value in (("nul", HOSTILE["nul"]),):
                    payload = value if name is None else {name: value}
                    reply = on.emit(event.name, payload, callback=True, namespace=namespace)
                    tried.append((namespace, event.name, name, kind))
                    assert isinstance(reply, dict) and (reply.get("success")
                                                        or reply["error"]["code"] != "INTERNAL_ERROR"), \
                        (namespace, event.name, name, kind, reply)
    assert len(tried) > 20, tried
