"""gunicorn's entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

import os

from webhook.app import create_app
from webhook.config import Settings
from webhook.logconfig import configure_logging

settings = Settings.from_env()
# gunicorn's access log, when GUNICORN_ACCESS_LOG asks for it (webhook/gunicorn_config.py):
# configured here again, it would otherwise lose the handler gunicorn gave it.
configure_logging(
    settings.log_format, settings.log_level, access_log=bool(os.environ.get("GUNICORN_ACCESS_LOG"))
)
app = create_app(settings)
