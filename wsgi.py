from gevent import monkey; monkey.patch_all()  # noqa: E702 - must run before anything else is imported

"""WSGI entry point for gunicorn (see Procfile)."""
import sys  # noqa: E402

from nexus import create_app  # noqa: E402
from nexus.config import ConfigError  # noqa: E402
from nexus.logs import configuration_error_line  # noqa: E402
from nexus.server import prepare_instance  # noqa: E402

# gunicorn's exit code for "worker failed to boot": the master stops instead of respawning.
WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except ConfigError as exc:
    print(configuration_error_line(exc), file=sys.stderr, flush=True)
    sys.exit(WORKER_BOOT_ERROR)

prepare_instance(app)
