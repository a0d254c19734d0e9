"""Agora NCS request signatures: sign() and verify(), pure and constant-time.

Agora signs the raw body bytes with the product's NCS secret and sends lowercase hex
digests in two headers: Agora-Signature-V2 (HMAC-SHA256) and Agora-Signature (HMAC-SHA1).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

from webhook.errors import SignatureError, SignatureMissingError

Algorithm = Literal["sha256", "sha1"]

HEADER_V2 = "Agora-Signature-V2"
HEADER_V1 = "Agora-Signature"


def sign(body: bytes, secret: str, algorithm: Algorithm = "sha256") -> str:
    """The hex digest Agora would send for this body."""
    return hmac.new(secret.encode("utf-8"), body, algorithm).hexdigest()


def verify(
    body: bytes,
    *,
    signature_v2: str | None,
    signature_v1: str | None,
    secrets: Sequence[str],
) -> Algorithm:
    """Check the body against every configured secret; return the algorithm that matched.

    V2 (SHA-256) is authoritative when present; SHA-1 is consulted only when V2 is absent,
    so a forged V1 next to a wrong V2 cannot get in.

    Raises:
        SignatureMissingError: neither header is present.
        SignatureError: the header does not match any secret.
    """
    if signature_v2:
        algorithm: Algorithm = "sha256"
        presented = signature_v2
    elif signature_v1:
        algorithm = "sha1"
        presented = signature_v1
    else:
        raise SignatureMissingError(f"{HEADER_V2} (or {HEADER_V1}) header is required")
    candidate = presented.strip().lower().encode("ascii", "replace")
    # Compare against every secret without stopping early: timing must not tell which matched.
    matched = False
    for secret in secrets:
        # hmac.digest: OpenSSL's one-shot HMAC, cheaper than building an HMAC object.
        expected = hmac.digest(secret.encode("utf-8"), body, algorithm).hex().encode("ascii")
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        header = HEADER_V2 if algorithm == "sha256" else HEADER_V1
        raise SignatureError(f"{header} does not match the body for any configured secret")
    return algorithm


def digest_of(body: bytes) -> str:
    """A short fingerprint of a body for logs, so bodies themselves never reach them."""
    return hashlib.sha256(body).hexdigest()[:16]
