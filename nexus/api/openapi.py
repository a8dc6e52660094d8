"""The REST API described: an OpenAPI 3.1 document built with apispec from the marshmallow schemas
the routes load and answer with, the error catalogue, and a page to read both.

Every REST view carries its description with `@describe(...)`; `document(app)` walks the app's
URL map and turns each described route into an operation (path and query parameters, the body,
the answer, and every catalogue error it may answer with, by HTTP status). A route under /api/
(or one of REST_OUTSIDE_API) without a description is left out of the document, and the tests
fail on it.

GET /api/openapi.json   the document
GET /api/errors         the error catalogue: code, HTTP status, meaning
GET /api/docs           Swagger UI (the npm package swagger-ui-dist, from node_modules) over the document
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template_string, send_from_directory
from marshmallow import Schema
from werkzeug.routing import IntegerConverter, Rule

from nexus.errors import CATALOGUE, NexusError
from nexus.extensions import http_limiter
from nexus.schemas.chat import ROOM_NAME, RoomName
from nexus.schemas.responses import ErrorCatalogueSchema, ErrorResponseSchema

TITLE = "Nexus REST API"
VERSION = "1.0.0"
#: REST routes outside /api/ (the README documents them with the API).
REST_OUTSIDE_API = frozenset({"/health", "/health/ready", "/metrics", "/socket-status"})
#: The routes the HTTP rate limiter leaves alone (the health blueprint).
UNLIMITED = frozenset({"/health", "/health/ready"})

# What a kind of caller may be refused with, besides what the route itself answers.
_TOKEN_ERRORS = ("UNAUTHORIZED", "INVALID_TOKEN", "TOKEN_EXPIRED", "TOKEN_REVOKED", "USER_BANNED")
AUTH = {
    None: {"security": [], "errors": ()},
    "bearer": {"security": [{"bearerAuth": []}], "errors": _TOKEN_ERRORS},
    "refresh": {"security": [{"refreshToken": []}], "errors": _TOKEN_ERRORS},
    "admin": {"security": [{"bearerAuth": []}], "errors": (*_TOKEN_ERRORS, "FORBIDDEN")},
    "admin_or_service": {"security": [{"bearerAuth": []}, {"serviceKey": []}], "errors": (*_TOKEN_ERRORS, "FORBIDDEN")},
    "operator": {"security": [{"metricsToken": []}, {"bearerAuth": []}], "errors": (*_TOKEN_ERRORS, "FORBIDDEN")},
}
_BODY_ERRORS = ("UNSUPPORTED_MEDIA_TYPE", "BAD_REQUEST", "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE")

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An access token from POST /api/auth/login."},
    "refreshToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                     "description": "The refresh token from POST /api/auth/login."},
    "serviceKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "A key of NEXUS_SERVICE_API_KEYS: another service sending as `service:api`."},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "NEXUS_METRICS_TOKEN (an administrator's access token works too)."},
}


@dataclasses.dataclass(frozen=True)
class Operation:
    """What the document says of one route."""

    summary: str
    response: type[Schema] | Schema | None = None
    status: int = 200
    auth: str | None = "bearer"
    query: type[Schema] | Schema | None = None
    body: type[Schema] | Schema | None = None
    body_required: bool = True
    errors: tuple[str, ...] = ()
    #: name -> its description, or a dict of JSON Schema keywords with an optional "description".
    path: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: status -> (description, {media type: media type object}), for answers besides `response` and the
    #: catalogue's errors (another media type, or another shape such as readiness's 503).
    responses: Mapping[int, tuple[str, Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    content_type: str = "application/json"
    description: str | None = None


def describe(summary: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Describe a REST view for the OpenAPI document (put it right under the route decorator).

    response: the schema of the success answer (status, default 200); auth: None, "bearer",
    "refresh", "admin", "admin_or_service" or "operator"; query / body: the schemas the view loads;
    errors: catalogue codes the route itself may answer with (those of its caller kind, its body,
    query and path, the rate limit and outages are added); path: descriptions of path parameters.
    """
    if options.get("auth", "bearer") not in AUTH:
        raise ValueError(f"unknown auth {options['auth']!r}")
    unknown = set(options.get("errors", ())) - set(CATALOGUE)
    if unknown:
        raise ValueError(f"not in the error catalogue: {sorted(unknown)}")

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        about = {**options, "description": options.get("description") or _doc(view)}
        view.openapi = Operation(summary, **about)  # type: ignore[attr-defined]
        return view

    return mark


def _doc(view: Callable[..., Any]) -> str | None:
    text = (view.__doc__ or "").strip()
    return " ".join(text.split()) or None


# -- the document ------------------------------------------------------------------------------


def rest_rules(app: Flask) -> list[Rule]:
    """The app's REST routes: everything under /api/, and REST_OUTSIDE_API."""
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/") or rule.rule in REST_OUTSIDE_API]


def rest_operations(app: Flask) -> Iterable[tuple[Rule, str, Operation | None]]:
    """(rule, method, description or None) for every REST route and method."""
    for rule in sorted(rest_rules(app), key=lambda rule: rule.rule):
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method, getattr(view, "openapi", None)


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's REST API (built once per app)."""
    built = app.extensions.get("nexus.openapi")
    if built is None:
        built = app.extensions["nexus.openapi"] = _build(app)
    return built


def _build(app: Flask) -> dict[str, Any]:
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={
            "description": "Nexus's REST API. Every refusal is `{success: false, error: {code, message}}` with a "
                           "code of the error catalogue (GET /api/errors); the Socket.IO events are described in "
                           "the README.",
        },
    )
    marshmallow.converter.add_attribute_function(_patterns)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    spec.components.schema("ErrorResponse", schema=ErrorResponseSchema)
    paths: dict[str, dict[str, Any]] = {}
    for rule, method, operation in rest_operations(app):
        if operation is None:
            continue
        path = _openapi_path(rule)
        paths.setdefault(path, {})[method.lower()] = _operation(rule, method, operation)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    built = spec.to_dict()
    for operations in built.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") == "query":
                    _not_nullable(parameter["schema"])
    return built


def _not_nullable(schema: dict[str, Any]) -> None:
    # A query parameter left out takes its default; none of them can be sent as null.
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        kinds = [kind for kind in kinds if kind != "null"]
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "default" in schema and schema["default"] is None:
        del schema["default"]


def _patterns(self: Any, field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Patterns as JSON Schema reads them (ECMA-262): Python's end of text `\\Z` is `$` there; a room
    name's pattern, which its field checks in code, is stated."""
    if isinstance(field, RoomName):
        return {"pattern": _ecma(ROOM_NAME.pattern)}
    if isinstance(ret.get("pattern"), str):
        return {"pattern": _ecma(ret["pattern"])}
    return {}


def _ecma(pattern: str) -> str:
    return pattern[:-2] + "$" if pattern.endswith("\\Z") else pattern


_ARGUMENT = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def _openapi_path(rule: Rule) -> str:
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def _operation(rule: Rule, method: str, operation: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in _ARGUMENT.findall(rule.rule):
        converter = rule._converters.get(name)  # werkzeug keeps no public map of a rule's converters
        schema: dict[str, Any] = (
            # What the route takes; an id no row can have (0, or past 2**31 - 1) names nothing: 404.
            {"type": "integer", "minimum": 0} if isinstance(converter, IntegerConverter)
            else {"type": "string", "minLength": 1}
        )
        about = operation.path.get(name, {})
        about = {"description": about} if isinstance(about, str) else dict(about)
        described = {"description": about.pop("description")} if "description" in about else {}
        parameters.append({"in": "path", "name": name, "required": True, "schema": {**schema, **about}, **described})
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    auth = AUTH[operation.auth]
    errors = list(auth["errors"]) + list(operation.errors)
    if operation.body is not None:
        errors += _BODY_ERRORS
    # Any path or query (a parameter the operation does not take included) holding NUL or an
    # unpaired surrogate, which no database stores, is refused before the route runs.
    errors.append("VALIDATION_ERROR")
    if any(parameter["in"] == "path" for parameter in parameters):
        errors.append("NOT_FOUND")  # a path that names nothing, or that no route matches
    if rule.rule not in UNLIMITED:
        errors.append("RATE_LIMITED")
    errors += ["UNAVAILABLE", "INTERNAL_ERROR"]

    responses: dict[str, Any] = {}
    if operation.response is not None:
        responses[str(operation.status)] = {
            "description": "Done.",
            "content": {operation.content_type: {"schema": operation.response}},
        }
    for status, (description, content) in operation.responses.items():
        responses[str(status)] = {"description": description, "content": dict(content)}
    for status, codes in _by_status(errors).items():
        if str(status) in responses:
            continue
        responses[str(status)] = _error_response(status, codes)

    result: dict[str, Any] = {
        "operationId": rule.endpoint.removeprefix("api."),
        "summary": operation.summary,
        "tags": [_tag(rule)],
        "security": auth["security"],
        "responses": responses,
    }
    if operation.description:
        result["description"] = operation.description
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": operation.body}},
        }
    return result


def _by_status(codes: Iterable[str]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):  # in order, once each
        grouped.setdefault(CATALOGUE[code][0], []).append(code)
    return dict(sorted(grouped.items()))


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    lines = [f"`{code}`: {CATALOGUE[code][1]}" for code in codes]
    headers = {}
    if any(code in ("RATE_LIMITED", "UNAVAILABLE") for code in codes):
        headers["Retry-After"] = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
    return {
        "description": " ".join(lines),
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ErrorResponse"},
                        {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
                    ]
                }
            }
        },
        **({"headers": headers} if headers else {}),
    }


def _tag(rule: Rule) -> str:
    """The group of a route in the docs: the part after /api/ (auth, rooms, ...); the descriptions of the
    API itself (documents, error codes, the docs page) together; the rest are for operators."""
    parts = [part for part in rule.rule.split("/") if part and not part.startswith("<")]
    if len(parts) < 2 or parts[0] != "api":
        return "operations"
    if parts[1].endswith(".json") or parts[1] in ("errors", "docs"):
        return "descriptions"
    return parts[1]


# -- the error catalogue -----------------------------------------------------------------------


def error_catalogue() -> list[dict[str, Any]]:
    """Every error code clients may receive: its HTTP status (over REST) and what it means."""
    return [{"code": code, "status": status, "message": message} for code, (status, message) in CATALOGUE.items()]


# -- routes ------------------------------------------------------------------------------------

bp = Blueprint("apidocs", __name__, url_prefix="/api")

STATIC = Path(__file__).resolve().parents[1] / "dashboard" / "static"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: What the docs page loads: from the swagger-ui-dist package, and the page's own start script.
VENDOR_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
OWN_FILES = ("api-docs.js",)
ASSETS = (*VENDOR_FILES, *OWN_FILES)
_TEXT = {"schema": {"type": "string"}}

# The dashboard's policy: no inline script or style, nothing from another origin.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Nexus REST API</title>
  <link rel="stylesheet" href="{{ url_for('apidocs.docs_asset', name='swagger-ui.css') }}">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{{ url_for('apidocs.openapi_json') }}"></div>
  <script src="{{ url_for('apidocs.docs_asset', name='swagger-ui-bundle.js') }}"></script>
  <script src="{{ url_for('apidocs.docs_asset', name='api-docs.js') }}"></script>
</body>
</html>
"""

MISSING_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Nexus REST API: the docs page is not installed</title></head>
<body>
  <h1>The API docs page needs swagger-ui-dist</h1>
  <p>The npm package <code>swagger-ui-dist</code> is not installed, so this page cannot show the API.
  Run <code>npm ci</code> in the Nexus folder (it installs node_modules from package.json), then reload.</p>
  <p>The description itself is served all the same: <a href="{{ url_for('apidocs.openapi_json') }}">{{
  url_for('apidocs.openapi_json') }}</a>, and the error codes at <a href="{{ url_for('apidocs.errors') }}">{{
  url_for('apidocs.errors') }}</a>.</p>
</body>
</html>
"""


def swagger_ui_dir() -> Path | None:
    """The swagger-ui-dist folder: node_modules beside Nexus, else in the working directory."""
    candidates = [REPO_ROOT / "node_modules/swagger-ui-dist", Path.cwd() / "node_modules/swagger-ui-dist"]
    return next((folder for folder in candidates if all((folder / name).is_file() for name in VENDOR_FILES)), None)


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@bp.get("/openapi.json")
@describe(
    "This document",
    auth=None,
    responses={200: ("The OpenAPI 3.1 document.", {"application/json": {"schema": {"type": "object"}}})},
)
def openapi_json():
    """The OpenAPI 3.1 description of every REST route."""
    return jsonify(document(current_app))


@bp.get("/errors")
@describe("The error catalogue", auth=None, response=ErrorCatalogueSchema)
def errors():
    """Every error code of the wire contract: the HTTP status REST answers it with, and what it means."""
    return jsonify({"success": True, "errors": error_catalogue()})


@bp.get("/docs")
@describe(
    "This API, to read in a browser",
    auth=None,
    responses={
        200: ("Swagger UI over /api/openapi.json.", {"text/html": _TEXT}),
        503: ("The page needs the npm package swagger-ui-dist (`npm ci`).", {"text/html": _TEXT}),
    },
)
def docs():
    """Swagger UI over this document, served from node_modules/swagger-ui-dist."""
    if swagger_ui_dir() is None:
        return render_template_string(MISSING_PAGE), 503
    return render_template_string(DOCS_PAGE)


@bp.get("/docs/assets/<name>")
@http_limiter.exempt
@describe(
    "A file of the docs page",
    auth=None,
    path={"name": {"enum": list(ASSETS), "description": "a file of the page"}},
    responses={
        200: ("The file.", {"text/javascript": {}, "text/css": {}}),
        503: ("swagger-ui-dist is not installed (`npm ci`).", {"text/plain": _TEXT}),
    },
)
def docs_asset(name: str):
    """Swagger UI's script and stylesheet, and the page's start script."""
    if name in OWN_FILES:
        return send_from_directory(STATIC, name, max_age=300)
    if name not in VENDOR_FILES:
        raise NexusError("NOT_FOUND", "There is no such file.")
    folder = swagger_ui_dir()
    if folder is None:
        return Response(
            "swagger-ui-dist is not installed, so the API docs page cannot be shown.\n"
            "Run `npm ci` in the Nexus folder (it installs node_modules/swagger-ui-dist from package.json), "
            "then reload.\n",
            status=503,
            mimetype="text/plain",
        )
    return send_from_directory(folder, name, max_age=3600)
