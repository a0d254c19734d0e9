"""A real S3-compatible HTTP server (moto's) on loopback, for tests that talk S3 over the wire.

Plain module, not a conftest: import the fixtures where they are needed, e.g. in a conftest
`from tests.integration.s3_server import s3_bucket, s3_server  # noqa: F401`. Requests go
through real HTTP and botocore, so nothing in boto3 is patched. moto accepts any key pair,
so tests cannot exercise wrong credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "test-access-key"
SECRET_ACCESS_KEY = "test-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens, and a way to put things in it."""

    endpoint_url: str
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    region_name: str = REGION
    # One boto3 session: a new one re-reads botocore's models (~60 ms), a new client does not.
    session: Any = field(default_factory=boto3.session.Session, repr=False, compare=False)

    def client(self) -> Any:
        """A boto3 S3 client for the test server (path-style: the host is an IP address)."""
        return self.session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self) -> str:
        """A new, empty bucket with a unique name: tests share the server, never a bucket."""
        name = f"test-{uuid.uuid4().hex[:24]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        client.close()
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session, on a port the OS picks (no free-port race)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Server(endpoint_url=f"http://{host}:{port}")
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """The name of a fresh bucket on the session's server."""
    return s3_server.create_bucket()
