from gevent import monkey; monkey.patch_all()  # noqa: E702 - must run before anything else is imported

"""WSGI entry point for gunicorn: `gunicorn -k nexus.server.GunicornWorker -w 1 wsgi:app`."""
import sys  # noqa: E402

from nexus import create_app  # noqa: E402
from nexus.config import ConfigError  # noqa: E402

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"nexus: configuration error: {exc}")
