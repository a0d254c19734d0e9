"""Blueprints, one per concern."""

from __future__ import annotations

from flask import Flask

from webhook.views import alerts, callbacks, dashboard, health, recordings, rejected, sessions


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(recordings.bp)
    app.register_blueprint(alerts.bp)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(rejected.bp)
    app.register_blueprint(dashboard.bp)
