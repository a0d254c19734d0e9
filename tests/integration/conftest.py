"""Fixtures for tests that talk to real servers beyond Redis."""

from tests.integration.s3_server import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]
