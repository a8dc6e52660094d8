"""Flask extensions, created unbound; nothing of nexus is imported here."""
from typing import Any, Callable, TypeVar

from flask import current_app
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every Nexus model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()
socketio = SocketIO()
cors = CORS()
# HTTP rate limits by client address (honouring NEXUS_TRUSTED_PROXIES through ProxyFix).
http_limiter = Limiter(key_func=get_remote_address)


T = TypeVar("T")


def per_app(key: str, make: Callable[[], T], app: Any = None) -> T:
    """The one object an app keeps under `key` in its extensions (the current app's by default),
    made by `make` on first use."""
    app = app if app is not None else current_app
    found = app.extensions.get(key)
    if found is None:
        found = app.extensions.setdefault(key, make())
    return found
