"""The tests' Flask client checks every answer it gets against the OpenAPI document (GET
/api/openapi.json): a REST route that answers something its description does not allow fails the
test that received it."""
from __future__ import annotations

import functools
import json

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

from nexus.api.openapi import document


@functools.lru_cache(maxsize=4)
def _openapi(text: str) -> OpenAPI:
    return OpenAPI.from_dict(json.loads(text))


def openapi_of(app) -> OpenAPI:
    """The app's document, ready to validate with (built once per distinct document)."""
    return _openapi(json.dumps(document(app), sort_keys=True))


class _AnsweredRequest(WerkzeugOpenAPIRequest):
    """The request of an answer; its body was read by the app already (and is not what is checked)."""

    @property
    def body(self) -> bytes:
        return b""


def check_response(app, response) -> None:
    """Fail unless the document describes this answer (routes the document does not name are left alone:
    a path no route matches, a method the route does not take, the dashboard)."""
    request = _AnsweredRequest(response.request)
    try:
        openapi_of(app).validate_response(request, WerkzeugOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        return
    except Exception as exc:
        body = response.get_data(as_text=True)[:500]
        raise AssertionError(
            f"{response.request.method} {response.request.full_path.rstrip('?')} answered {response.status_code} "
            f"outside the OpenAPI document: {exc!r}\n{getattr(exc, '__cause__', None)!r:.2000}\nbody: {body}"
        ) from exc


class DocumentedClient(FlaskClient):
    """Flask's test client, checking each answer against the OpenAPI document."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check_response(self.application, response)
        return response
