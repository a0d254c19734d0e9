"""webhook.store.ratelimit.client_of: the unit refusals are counted by."""

from __future__ import annotations

import pytest

from webhook.store.ratelimit import client_of


@pytest.mark.parametrize(
    ("remote_addr", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("", "unknown"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_clients(remote_addr: str | None, client: str) -> None:
    assert client_of(remote_addr) == client


def test_whatever_a_proxy_wrote_is_bounded() -> None:
    assert len(client_of("x" * 10_000)) == 64
