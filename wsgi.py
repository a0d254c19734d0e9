"""gunicorn's entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

from webhook.app import create_app
from webhook.config import Settings
from webhook.logconfig import configure_logging

settings = Settings.from_env()
configure_logging(settings.log_format, settings.log_level)
app = create_app(settings)
