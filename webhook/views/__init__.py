"""Blueprints, one per concern."""

from __future__ import annotations

from flask import Flask

from webhook.views import callbacks, health


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(health.bp)
