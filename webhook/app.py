"""create_app(): wiring only, no logic."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook import extensions
from webhook.config import Settings, redact_url
from webhook.jobs import callback_queue
from webhook.store import CallbackStore, connect
from webhook.store.alerts import AlertStore
from webhook.store.connections import connect_cluster
from webhook.store.recordings import RecordingStore
from webhook.views import register_blueprints
from webhook.views.auth import DashboardSessions, session_key
from webhook.views.errors import register_error_handlers

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app; tests pass their own Settings instead of touching os.environ."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    redis = connect(
        settings.redis_url, timeout=settings.redis_timeout,
        sentinels=settings.redis_sentinels, sentinel_master=settings.redis_sentinel_master,
    )  # fmt: skip
    app.extensions[extensions.SETTINGS] = settings
    # The event store may live on a Redis Cluster of its own; everything else on `redis`.
    store = (
        connect_cluster(settings.store_cluster_url, timeout=settings.redis_timeout)
        if settings.store_cluster_url
        else redis
    )
    app.extensions[extensions.STORE] = CallbackStore(
        store,
        retention=settings.retention,
        dedupe_window=settings.dedupe_window,
        rejected_max=settings.rejected_max,
        min_replicas=settings.store_min_replicas,
        replica_timeout=settings.store_replica_timeout,
    )
    app.extensions[extensions.QUEUE] = callback_queue(redis, settings.queue_name)
    app.extensions[extensions.RECORDINGS] = RecordingStore(redis, retention=settings.retention)
    app.extensions[extensions.ALERTS] = AlertStore(redis, retention=settings.retention)
    if settings.proxy_hops:
        # Behind a load balancer the client address comes from X-Forwarded-For, and
        # whether the browser used HTTPS from X-Forwarded-Proto.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]  # the documented way to wrap the WSGI app
    # The dashboard's session cookie: signed with a key derived from API_TOKENS, readable
    # by no script, sent on no cross-site request, marked Secure whenever served over HTTPS.
    app.secret_key = session_key(settings.api_tokens)
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME="agora_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    register_blueprints(app)
    register_error_handlers(app)
    if settings.accepts_unsigned:
        logger.warning(
            "UNSIGNED CALLBACKS ARE ACCEPTED: APP_ENV=development and no "
            "AGORA_CALLBACK_SECRETS. Never run this configuration on the internet."
        )
    logger.info("webhook ready: redis=%s", redact_url(settings.redis_url))
    return app
