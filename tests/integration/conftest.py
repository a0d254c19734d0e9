"""Fixtures for tests that talk to real servers beyond Redis."""

import pytest
from flask.testing import FlaskClient

from tests.conftest import SECRET
from tests.integration.s3_server import s3_bucket, s3_server
from webhook.app import create_app
from webhook.config import Settings
from webhook.redis_server import RedisServer

__all__ = ["API_TOKEN", "AUTH", "ops_client", "s3_bucket", "s3_server"]

API_TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def ops_client(own_redis: RedisServer) -> FlaskClient:
    """The app on the module's own redis-server (its `own_redis` fixture, which the module
    may stop or break), with an API token and a dashboard session."""
    settings = Settings(
        redis_url=own_redis.url, callback_secrets=(SECRET,), api_tokens=(API_TOKEN,),
        log_format="text",
    )  # fmt: skip
    client = create_app(settings).test_client()
    answer = client.post("/dashboard/login", data={"token": API_TOKEN, "next": "/dashboard/"})
    assert answer.status_code == 302
    return client
