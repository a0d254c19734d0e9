"""The OpenAPI document, and schemathesis against the real app: no input gives a 500."""

from __future__ import annotations

from dataclasses import replace

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from redis import Redis
from schemathesis.checks import not_a_server_error

from webhook.app import create_app
from webhook.config import Settings

TOKEN = "schemathesis-token"


@pytest.fixture
def api_app(settings: Settings, redis: Redis) -> Flask:
    return create_app(replace(settings, api_tokens=(TOKEN,)))


@pytest.fixture
def api_schema(api_app: Flask) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app)


def test_the_document_is_served_and_names_every_route(api_app: Flask):
    client: FlaskClient = api_app.test_client()
    document = client.get("/api/v1/openapi.json").get_json()

    assert document["openapi"].startswith("3.")
    routed = {
        str(rule).replace("<", "{").replace(">", "}")
        for rule in api_app.url_map.iter_rules()
        # The dashboard's HTML pages are for browsers, not part of the JSON API.
        if rule.endpoint != "static" and not rule.endpoint.startswith("dashboard.")
    }
    assert set(document["paths"]) == routed - {"/api/v1/openapi.json", "/metrics"}


def test_no_generated_request_gets_a_server_error(api_schema: schemathesis.BaseSchema):
    # schemathesis' pytest plugin does not run under pytest 9 yet, so each operation's
    # strategy is driven by hypothesis directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]  # an invalid operation fails the test here
    assert len(operations) >= 10
    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=operation.as_strategy())
        def never_a_500(case: schemathesis.Case) -> None:  # type: ignore[type-arg]  # generic upstream
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
            )

        never_a_500()
