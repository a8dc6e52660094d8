"""The event catalogue against the namespaces it describes: the same events, the same schemas, the same costs."""
from __future__ import annotations

import importlib
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from nexus import schemas as schemas_module
from nexus.errors import CATALOGUE as ERROR_CATALOGUE
from nexus.extensions import socketio
from nexus.realtime import catalogue, events
from nexus.realtime.namespaces.base import DEFAULT_COST

HANDLER_MODULES = [
    importlib.import_module(f"nexus.realtime.namespaces.{name}") for name in ("chat", "default", "presence", "admin")
]
NOT_EVENTS = {"DEFAULT", "CHAT", "PRESENCE", "ADMIN", "ALL_USERS_ROOM", "NAMESPACES_BY_EVENT", "ROLE_ROOMS",
              "RESERVED_ROOM_PREFIXES", "RESERVED_ROOMS"}


def handlers(namespace: Any) -> dict[str, Any]:
    """The events a registered namespace handles: its on_<event> methods."""
    return {
        name[3:]: getattr(namespace, name)
        for name in dir(namespace)
        if name.startswith("on_") and name not in ("on_connect", "on_disconnect") and callable(getattr(namespace, name))
    }


def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """Validate against one of the catalogue's JSON Schemas ($refs into its components)."""
    root = {"components": {"schemas": catalogue.described().components}}
    registry = Registry().with_resource("urn:nexus", Resource.from_contents(root, default_specification=DRAFT7))
    return jsonschema.Draft7Validator(_rooted(schema), registry=registry)


def _rooted(schema: Any) -> Any:
    """`#/components/...` references made absolute (urn:nexus#/components/...)."""
    if isinstance(schema, dict):
        return {key: ("urn:nexus" + value if key == "$ref" and value.startswith("#") else _rooted(value))
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [_rooted(item) for item in schema]
    return schema


def test_the_server_registers_the_catalogue_namespaces(app):
    assert set(socketio.server.namespace_handlers) == set(catalogue.NAMESPACES)


@pytest.mark.parametrize("name", list(catalogue.NAMESPACES))
def test_every_handler_is_in_the_catalogue_and_every_catalogued_event_has_a_handler(app, name):
    registered = handlers(socketio.server.namespace_handlers[name])
    described = {event.name for event in catalogue.NAMESPACES[name].receives}
    assert set(registered) - described == set(), "handled but not in nexus/realtime/catalogue.py"
    assert described - set(registered) == set(), "in the catalogue but not handled"


@pytest.mark.parametrize("name", list(catalogue.NAMESPACES))
def test_rate_costs_are_the_handlers(app, name):
    registered = handlers(socketio.server.namespace_handlers[name])
    for event in catalogue.NAMESPACES[name].receives:
        assert getattr(registered[event.name], "rate_cost", DEFAULT_COST) == event.cost, event.name


@pytest.mark.parametrize("name", list(catalogue.NAMESPACES))
def test_the_events_accepted_after_the_token_expired_are_the_namespaces(app, name):
    namespace = socketio.server.namespace_handlers[name]
    assert namespace.allowed_after_expiry == catalogue.ALLOWED_AFTER_EXPIRY


def test_every_server_event_name_is_catalogued_once():
    names = {value for key, value in vars(events).items()
             if key.isupper() and isinstance(value, str) and key not in NOT_EVENTS}
    catalogued = [event.name for event in catalogue.SERVER_EVENTS]
    assert sorted(catalogued) == sorted(set(catalogued))
    assert set(catalogued) == names


def test_broadcast_events_go_out_on_the_namespaces_the_facade_uses():
    for event in catalogue.SERVER_EVENTS:
        if event.name in events.NAMESPACES_BY_EVENT:
            assert event.namespaces == events.namespaces_for(event.name), event.name
        assert set(event.namespaces) <= set(catalogue.NAMESPACES), event.name


def test_refusal_codes_are_in_the_error_catalogue():
    for event in catalogue.client_events():
        assert set(event.error_codes) <= set(ERROR_CATALOGUE), event.name
        assert "UNAUTHORIZED" in event.error_codes and "INTERNAL_ERROR" in event.error_codes


def test_one_definition_per_event_name():
    seen: dict[str, Any] = {}
    for namespace in catalogue.NAMESPACES.values():
        for event in namespace.receives:
            assert seen.setdefault(event.name, event) is event, event.name


@pytest.mark.parametrize("event", list(catalogue.client_events()), ids=lambda event: event.name)
def test_examples_are_valid_for_the_handler_schema_and_the_json_schema(event):
    described = catalogue.described()
    if event.payload is None:
        assert described.payloads[event.name] is None
        return
    assert event.example is not None, "give the event an example payload"
    validator(described.payloads[event.name]).validate(event.example)
    if event.payload.loaded:
        event.payload.load_schema().load(event.example)


@pytest.mark.parametrize(
    "event", [e for e in catalogue.client_events() if e.payload and e.payload.loaded and (e.payload.bare or
                                                                                            e.payload.aliases)],
    ids=lambda event: event.name,
)
def test_bare_values_and_aliases_are_accepted_by_the_handler_schema(event):
    """The other shapes the catalogue announces are ones the schema's pre_load really takes."""
    payload = event.payload
    schema = payload.load_schema()
    wire = schema.fields[payload.bare].data_key or payload.bare if payload.bare else None
    example = event.example if isinstance(event.example, dict) else {wire: event.example}
    for key, alias in payload.aliases.items():  # the example in its canonical shape
        if alias in example and key not in example:
            example = {key if name == alias else name: value for name, value in example.items()}
    canonical = schema.load(example)
    if wire is not None:
        assert schema.load(example[wire]) == schema.load({wire: example[wire]})
    for key, alias in payload.aliases.items():
        if key in example:
            renamed = {alias if name == key else name: value for name, value in example.items()}
            assert schema.load(renamed) == canonical


def test_invalid_payloads_fail_the_json_schema_too():
    described = catalogue.described()
    for name, bad in [("join_room", {"room": "-no"}), ("send_message", {"roomId": "general"}),
                      ("update_status", "asleep"), ("mark_read", {"roomId": "general"}),
                      ("broadcast", {"kind": "everyone", "message": "x"})]:
        assert not validator(described.payloads[name]).is_valid(bad), name


@pytest.fixture
def schema_calls(monkeypatch) -> list[tuple[type, dict[str, Any]]]:
    """Every schema a handler asks nexus.schemas.schema for (the real schema is returned)."""
    calls: list[tuple[type, dict[str, Any]]] = []

    def recording(cls, **options):
        calls.append((cls, options))
        return schemas_module.schema(cls, **options)

    for module in HANDLER_MODULES:
        if hasattr(module, "schema"):
            monkeypatch.setattr(module, "schema", recording)
    return calls


@pytest.mark.parametrize("name", list(catalogue.NAMESPACES))
def test_each_handler_loads_the_schema_the_catalogue_names(app, make_user, token_for, socket_client, schema_calls,
                                                          name):
    admin = make_user("root", role="admin", department="sales")
    client = socket_client(token=token_for(admin), namespace=name)
    assert client.is_connected(name)
    for event in catalogue.NAMESPACES[name].receives:
        if event.payload is None or not event.payload.loaded:
            continue
        schema_calls.clear()
        ack = client.emit(event.name, event.example, callback=True, namespace=name)
        assert ack is not None and "success" in ack, event.name
        loaded = [(cls, options) for cls, options in schema_calls]
        expected = (event.payload.schema, event.payload.options(app.config["NEXUS"]))
        assert expected in loaded, f"{name} {event.name} loads {loaded}, the catalogue says {expected}"
