"""Bearer tokens for the API: "Authorization: Bearer <token>", compared in constant time."""

from __future__ import annotations

import hmac

from flask import request

from webhook.errors import AuthenticationError
from webhook.extensions import current_settings


def require_token() -> None:
    """Raises:
    AuthenticationError: no token, or not one of API_TOKENS."""
    tokens = current_settings().api_tokens
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthenticationError("Authorization: Bearer <token> is required")
    candidate = presented.strip().encode()
    # Every token is compared, so timing does not tell which one (or whether any) matched.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(token.encode(), candidate)
    if not matched:
        raise AuthenticationError("the token is not valid")
