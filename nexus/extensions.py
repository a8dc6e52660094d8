"""Flask extensions, created unbound; nothing of nexus is imported here."""
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
