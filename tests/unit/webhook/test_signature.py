"""webhook.signature: what Agora's NCS headers must say for a body to get in."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import OLD_SECRET, SECRET, load_example
from webhook.errors import SignatureError, SignatureMissingError
from webhook.signature import digest_of, sign, verify

BODY = json.dumps(load_example("31_")).encode()
SECRETS = (SECRET, OLD_SECRET)

# Computed independently of webhook.signature, with hashlib/hmac directly.
VECTOR_BODY = b'{"a":1}'
VECTOR_SECRET = "s"
VECTOR_SHA256 = hmac.new(b"s", b'{"a":1}', hashlib.sha256).hexdigest()
VECTOR_SHA1 = hmac.new(b"s", b'{"a":1}', hashlib.sha1).hexdigest()


# --- sign -------------------------------------------------------------------------------


def test_sign_matches_an_independently_computed_sha256_hmac() -> None:
    assert sign(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SHA256


def test_sign_matches_an_independently_computed_sha1_hmac() -> None:
    assert sign(VECTOR_BODY, VECTOR_SECRET, "sha1") == VECTOR_SHA1


def test_sign_gives_lowercase_hex_of_the_digest_length() -> None:
    sha256, sha1 = sign(BODY, SECRET), sign(BODY, SECRET, "sha1")

    assert len(sha256) == 64
    assert len(sha1) == 40
    for digest in (sha256, sha1):
        assert digest == digest.lower()
        int(digest, 16)  # raises unless hex


def test_sign_depends_on_the_secret() -> None:
    assert sign(BODY, SECRET) != sign(BODY, OLD_SECRET)


# --- verify: accepted -------------------------------------------------------------------


def test_a_correct_v2_signature_is_accepted_as_sha256() -> None:
    algorithm = verify(BODY, signature_v2=sign(BODY, SECRET), signature_v1=None, secrets=SECRETS)

    assert algorithm == "sha256"


def test_the_known_vector_verifies() -> None:
    algorithm = verify(
        VECTOR_BODY, signature_v2=VECTOR_SHA256, signature_v1=None, secrets=(VECTOR_SECRET,)
    )

    assert algorithm == "sha256"


def test_a_body_signed_with_the_previous_secret_is_accepted_during_rotation() -> None:
    algorithm = verify(
        BODY, signature_v2=sign(BODY, OLD_SECRET), signature_v1=None, secrets=SECRETS
    )

    assert algorithm == "sha256"


def test_an_uppercase_hex_signature_is_accepted() -> None:
    signature = sign(BODY, SECRET).upper()

    assert verify(BODY, signature_v2=signature, signature_v1=None, secrets=SECRETS) == "sha256"


def test_a_v1_signature_is_accepted_as_sha1_when_v2_is_absent() -> None:
    signature = sign(BODY, SECRET, "sha1")

    assert verify(BODY, signature_v2=None, signature_v1=signature, secrets=SECRETS) == "sha1"


def test_a_correct_v2_wins_over_a_wrong_v1() -> None:
    algorithm = verify(
        BODY, signature_v2=sign(BODY, SECRET), signature_v1="0" * 40, secrets=SECRETS
    )

    assert algorithm == "sha256"


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64))
def test_any_body_signed_with_any_secret_verifies(body: bytes, secret: str) -> None:
    algorithm = verify(body, signature_v2=sign(body, secret), signature_v1=None, secrets=[secret])

    assert algorithm == "sha256"


# --- verify: refused --------------------------------------------------------------------


def test_a_wrong_signature_is_refused() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signature_v2=sign(BODY, "not-configured"), signature_v1=None, secrets=SECRETS)

    assert caught.value.reason == "signature_mismatch"
    assert caught.value.status == 401


def test_a_good_v1_does_not_rescue_a_wrong_v2() -> None:
    with pytest.raises(SignatureError):
        verify(
            BODY,
            signature_v2=sign(BODY, "not-configured"),
            signature_v1=sign(BODY, SECRET, "sha1"),
            secrets=SECRETS,
        )


def test_a_sha1_digest_in_the_v2_header_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, signature_v2=sign(BODY, SECRET, "sha1"), signature_v1=None, secrets=SECRETS)


def test_a_wrong_v1_is_refused_when_v2_is_absent() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, signature_v2=None, signature_v1=sign(BODY, "other", "sha1"), secrets=SECRETS)


def test_a_missing_signature_is_refused_as_missing() -> None:
    with pytest.raises(SignatureMissingError) as caught:
        verify(BODY, signature_v2=None, signature_v1=None, secrets=SECRETS)

    assert caught.value.reason == "signature_missing"
    assert caught.value.status == 401


def test_empty_signature_headers_count_as_missing() -> None:
    with pytest.raises(SignatureMissingError):
        verify(BODY, signature_v2="", signature_v1="", secrets=SECRETS)


def test_a_reserialised_body_with_the_same_json_is_refused() -> None:
    signature = sign(BODY, SECRET)
    reserialised = json.dumps(json.loads(BODY), indent=2).encode()
    assert reserialised != BODY
    assert json.loads(reserialised) == json.loads(BODY)

    with pytest.raises(SignatureError):
        verify(reserialised, signature_v2=signature, signature_v1=None, secrets=SECRETS)


def test_a_body_changed_by_one_byte_is_refused() -> None:
    signature = sign(BODY, SECRET)

    with pytest.raises(SignatureError):
        verify(BODY + b" ", signature_v2=signature, signature_v1=None, secrets=SECRETS)


def test_no_configured_secret_refuses_every_signature() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, signature_v2=sign(BODY, SECRET), signature_v1=None, secrets=())


def test_a_non_ascii_signature_is_refused_not_crashed_on() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, signature_v2="é" * 64, signature_v1=None, secrets=SECRETS)


# --- digest_of --------------------------------------------------------------------------


def test_digest_of_is_a_short_stable_fingerprint_without_the_body() -> None:
    assert digest_of(BODY) == hashlib.sha256(BODY).hexdigest()[:16]
    assert digest_of(BODY) != digest_of(BODY + b" ")
