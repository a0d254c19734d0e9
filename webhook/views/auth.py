"""Tokens (API_TOKENS), compared in constant time: "Authorization: Bearer <token>" for the
API, a login form and a signed session cookie for the dashboard."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from webhook.errors import AuthenticationError
from webhook.extensions import current_settings

# Where the dashboard's pages live (webhook/views/dashboard.py): the only ones with sessions.
DASHBOARD_PREFIX = "/dashboard"


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


# --- The dashboard: the same tokens, typed once into a login form ------------------------
# The browser keeps a signed session cookie holding a fingerprint of the token, never the
# token itself. Every request checks the fingerprint against the tokens configured now, so
# removing a token from API_TOKENS logs out whoever used it.


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure whenever the request came over HTTPS, and
    only for the dashboard's pages."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Only the dashboard has sessions. Opening one builds a signing serializer and
        # parses cookies on every request: ~60 µs of a callback's ~430 µs in one process,
        # measured. None makes Flask use a null session that cannot be written.
        # (Flask opens the session before it matches the URL: the path is what we have.)
        path = request.path
        if path != DASHBOARD_PREFIX and not path.startswith(DASHBOARD_PREFIX + "/"):
            return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def session_key(tokens: tuple[str, ...]) -> bytes:
    """The key that signs dashboard cookies, derived from the tokens: every web process
    and host agrees on it with no extra setting, and it changes when the tokens do."""
    material = b"\0".join(sorted(t.encode() for t in tokens))
    return hashlib.sha256(b"agora-dashboard-session\0" + material).digest()


def fingerprint(token: str) -> str:
    return hashlib.sha256(b"agora-dashboard-token\0" + token.encode()).hexdigest()


def login(presented: str) -> bool:
    """Start a dashboard session when `presented` is one of API_TOKENS."""
    candidate = presented.strip().encode()
    matched: str | None = None
    for token in current_settings().api_tokens:
        if hmac.compare_digest(token.encode(), candidate):
            matched = token
    if matched is None or not candidate:
        return False
    session.clear()
    session.permanent = True
    session["token"] = fingerprint(matched)
    session["csrf"] = secrets.token_urlsafe(24)
    return True


def logout() -> None:
    session.clear()


def logged_in() -> bool:
    held = session.get("token")
    if not isinstance(held, str):
        return False
    matched = False
    for token in current_settings().api_tokens:
        matched |= hmac.compare_digest(fingerprint(token), held)
    return matched


def csrf_token() -> str:
    return str(session.get("csrf", ""))


def check_csrf(presented: str | None) -> bool:
    """Forms that change something carry the session's CSRF token."""
    expected = csrf_token()
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 400).
    return bool(expected) and hmac.compare_digest(expected.encode(), (presented or "").encode())
