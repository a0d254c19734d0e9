"""gunicorn's settings: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`.

They live in the package, webhook/gunicorn_config.py, so that `agora-webhook serve` in an
installed service (no checkout, no deploy/) runs with the same ones.
"""

from webhook.gunicorn_config import *  # noqa: F403  # gunicorn reads this module's names
