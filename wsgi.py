"""gunicorn's entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

import os

from webhook.app import create_app
from webhook.config import Settings
from webhook.logconfig import access_log_target, configure_logging

settings = Settings.from_env()
# Configured here again, gunicorn's access log (when asked for) would otherwise lose the
# handler gunicorn gave it.
configure_logging(
    settings.log_format, settings.log_level, access_log=access_log_target(os.environ) is not None
)
app = create_app(settings)
