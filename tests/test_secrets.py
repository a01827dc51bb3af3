"""The secret format: prefix, base62 body, CRC32 checksum; only HMAC digests are stored."""

import string
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensmith import secrets

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def test_generated_secret_has_prefix_body_and_checksum():
    secret = secrets.generate()
    assert secret.startswith("tsm_")
    assert len(secret) == 42
    assert all(c in BASE62 for c in secret[4:])
    assert secrets.is_well_formed(secret)


def test_checksum_is_base62_crc32_of_everything_before_it():
    secret = secrets.generate()
    head, tail = secret[:-6], secret[-6:]
    value = 0
    for c in tail:
        value = value * 62 + BASE62.index(c)
    assert value == zlib.crc32(head.encode())


def test_generated_secrets_are_unique():
    assert len({secrets.generate() for _ in range(2000)}) == 2000


@given(st.text(max_size=60))
def test_arbitrary_text_is_never_well_formed_by_accident(text):
    if text.startswith("tsm_") and len(text) == 42:
        return  # covered by the single-character test below
    assert not secrets.is_well_formed(text)


@given(st.data())
def test_changing_any_single_character_breaks_the_checksum(data):
    secret = secrets.generate()
    index = data.draw(st.integers(min_value=4, max_value=41))
    replacement = data.draw(st.sampled_from(BASE62).filter(lambda c: c != secret[index]))
    tampered = secret[:index] + replacement + secret[index + 1 :]
    assert not secrets.is_well_formed(tampered)


@given(st.text(alphabet=BASE62, min_size=38, max_size=38))
def test_only_the_right_checksum_is_accepted(body):
    candidate = "tsm_" + body
    assert secrets.is_well_formed(candidate) == (secrets.checksum(candidate[:-6]) == candidate[-6:])


def test_wrong_prefix_or_length_is_rejected():
    secret = secrets.generate()
    assert not secrets.is_well_formed("tsx_" + secret[4:])
    assert not secrets.is_well_formed(secret + "A")
    assert not secrets.is_well_formed(secret[:-1])
    assert not secrets.is_well_formed(" " + secret)


def test_digest_is_hmac_sha256_keyed_by_the_server_key():
    secret = secrets.generate()
    assert secrets.digest(secret, b"k1" * 16) == secrets.digest(secret, b"k1" * 16)
    assert secrets.digest(secret, b"k1" * 16) != secrets.digest(secret, b"k2" * 16)
    assert len(secrets.digest(secret, b"k1" * 16)) == 64
    assert secret not in secrets.digest(secret, b"k1" * 16)


def test_find_in_text_ignores_look_alikes_with_bad_checksums():
    good = secrets.generate()
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    text = f"token={good}\nother={bad}\nprefix_{good}x"
    assert [s for _, s in secrets.find_in_text(text)] == [good]


def test_hint_and_mask_show_only_the_last_four_characters():
    secret = secrets.generate()
    assert secrets.hint(secret) == secret[-4:]
    assert secrets.mask(secret) == "tsm_…" + secret[-4:]


def test_other_credentials_share_the_format_under_their_own_prefix():
    webhook = secrets.generate(secrets.WEBHOOK_PREFIX)
    assert webhook.startswith("tsw_")
    assert secrets.is_well_formed(webhook, secrets.WEBHOOK_PREFIX)
    assert not secrets.is_well_formed(webhook)
    assert not secrets.is_well_formed(secrets.generate(), secrets.WEBHOOK_PREFIX)


@pytest.mark.parametrize("prefix", [secrets.PREFIX, secrets.WEBHOOK_PREFIX, secrets.REPORTER_PREFIX])
def test_mask_shows_the_prefix_of_the_secrets_own_kind(prefix):
    secret = secrets.generate(prefix)
    assert secrets.mask(secret) == f"{prefix}…{secret[-4:]}"


def test_mask_of_an_access_key_id_shows_its_kind_and_of_an_s3_secret_no_prefix():
    key_id = secrets.access_key_id(permanent=False)
    assert secrets.mask(key_id) == f"TSMT…{key_id[-4:]}"
    s3_secret = secrets.access_key_secret()
    assert secrets.mask(s3_secret) == f"…{s3_secret[-4:]}"


@pytest.mark.parametrize("prefix", secrets.CREDENTIAL_PREFIXES)
def test_every_credential_kind_is_recognised_by_the_one_prefix_list(prefix):
    secret = secrets.generate(prefix)
    assert secrets.is_credential(secret)
    assert secrets.CREDENTIAL_SHAPE.fullmatch(secret)
    assert not secrets.is_credential(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
