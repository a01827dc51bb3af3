"""sigv4.parse rebuilds the canonical request botocore signed: the signature it computes from the
scope's signing key is botocore's own, for the shapes an S3 gateway describes.

Verification is hot (once per S3 request), so parse takes shortcuts (known header names,
translate instead of quote, the last signing time remembered); each case here is one of them
meeting the input it must not get wrong.
"""

from __future__ import annotations

import pytest

from tests.s3sign import presigned, signed
from tokensmith.objectstore import sigv4

KEY_ID = "TSMPAAAAAAAAAAAAAAAA"
SECRET = "s3cr3t-" * 5 + "abcde"


def recomputed(payload: dict) -> tuple[str, str]:
    """(the signature botocore sent, the one tokensmith computes for the same request)."""
    request = sigv4.parse(payload["method"], payload["path"], payload["query"], payload["headers"])
    return request.signature, sigv4.signature(sigv4.signing_key(SECRET, request.credential), request)


def test_a_header_signed_get_is_recomputed():
    sent, computed = recomputed(signed("GET", "/bucket/object", KEY_ID, SECRET))
    assert computed == sent


def test_a_presigned_url_is_recomputed():
    sent, computed = recomputed(presigned("GET", "/bucket/object", KEY_ID, SECRET, expires=3600))
    assert computed == sent


@pytest.mark.parametrize("query", [
    "list-type=2&prefix=photos%2F2026&max-keys=100",
    "prefix=a%20b%2Bc%3Dd%26e&delimiter=%2F",
    "prefix=%E2%82%AC%C3%A9&marker=~tilde_.dot-dash",
    "uploads=&acl=",
])
def test_reserved_and_non_ascii_query_characters_are_encoded_as_botocore_does(query):
    sent, computed = recomputed(signed("GET", f"/bucket?{query}", KEY_ID, SECRET))
    assert computed == sent


def test_query_escapes_are_read_as_what_they_encode_as_aws_reads_them():
    # %41 is A, %2f is %2F: parameters are decoded, then encoded the one canonical way.
    headers = signed("GET", "/b", KEY_ID, SECRET)["headers"]
    request = sigv4.parse("GET", "/b", "prefix=%41b%2fc&marker=%7e%7E&x=a%3Db&y=%2F%20", headers)
    assert "\nmarker=~~&prefix=Ab%2Fc&x=a%3Db&y=%2F%20\n" in request.canonical_request


def test_a_presigned_url_with_more_parameters_is_recomputed():
    payload = presigned("GET", "/bucket/object?response-content-disposition=attachment%3B%20filename%3Dx.pdf",
                        KEY_ID, SECRET)
    sent, computed = recomputed(payload)
    assert computed == sent


def test_runs_of_whitespace_in_a_signed_header_value_count_as_one_space():
    payload = signed("PUT", "/bucket/object", KEY_ID, SECRET, body=b"x",
                     headers={"Content-Type": "text/plain;  charset=utf-8", "X-Amz-Meta-Note": "  a \t b  "})
    sent, computed = recomputed(payload)
    assert computed == sent


def test_unicode_whitespace_in_a_header_value_is_trimmed_and_collapsed_like_ascii_whitespace():
    headers = {**signed("GET", "/b", KEY_ID, SECRET)["headers"], "Host": "\u3000a\u00a0\u2003 b\x0b"}
    assert "\nhost:a b\n" in sigv4.parse("GET", "/b", "", headers).canonical_request


def test_one_header_sent_under_two_spellings_is_one_comma_separated_value():
    headers = {**signed("GET", "/b", KEY_ID, SECRET)["headers"], "X-Amz-Meta-A": "1", "x-amz-meta-a": "2",
               "X-AMZ-META-A": "3"}
    request = sigv4.parse("GET", "/b", "", headers)
    assert request.unsigned_amz_headers == ("x-amz-meta-a",)
    assert sigv4._lower_headers(headers)["x-amz-meta-a"] == "1,2,3"


def test_an_invalid_header_name_is_refused_every_time_it_is_sent():
    headers = {**signed("GET", "/b", KEY_ID, SECRET)["headers"], "Bad Name": "x"}
    for _ in range(2):  # the second time too: only valid names are remembered
        with pytest.raises(sigv4.MalformedRequest, match="not a valid HTTP header name"):
            sigv4.parse("GET", "/b", "", headers)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b"])
def test_a_line_break_or_nul_in_a_header_value_is_refused(value):
    headers = {**signed("GET", "/b", KEY_ID, SECRET)["headers"], "X-Amz-Meta-A": value}
    with pytest.raises(sigv4.MalformedRequest, match="line break or NUL"):
        sigv4.parse("GET", "/b", "", headers)


def test_the_signing_time_of_one_request_is_not_anothers():
    first = signed("GET", "/b", KEY_ID, SECRET)
    date = first["headers"]["X-Amz-Date"]
    later = date[:-3] + ("00Z" if date[-3:] != "00Z" else "01Z")
    assert sigv4.parse("GET", "/b", "", first["headers"]).amz_date_text == date
    again = sigv4.parse("GET", "/b", "", {**first["headers"], "X-Amz-Date": later})
    assert again.amz_date_text == later and again.amz_date.second == int(later[13:15])


def test_a_signing_time_that_is_not_one_is_refused_even_after_a_good_one():
    good = signed("GET", "/b", KEY_ID, SECRET)["headers"]
    sigv4.parse("GET", "/b", "", good)
    with pytest.raises(sigv4.MalformedRequest, match="must look like"):
        sigv4.parse("GET", "/b", "", {**good, "X-Amz-Date": good["X-Amz-Date"][:-1]})


@pytest.mark.parametrize("signed_headers", ["host;;x-amz-date", ";host", "host;", "Host;x-amz-date", "host x"])
def test_signed_headers_that_are_not_lower_case_names_separated_by_semicolons_are_refused(signed_headers):
    headers = signed("GET", "/b", KEY_ID, SECRET)["headers"]
    authorization = headers["Authorization"].replace("SignedHeaders=host;", f"SignedHeaders={signed_headers};", 1)
    with pytest.raises(sigv4.MalformedRequest):
        sigv4.parse("GET", "/b", "", {**headers, "Authorization": authorization})


def test_a_credential_date_in_other_digits_than_ascii_is_still_eight_digits():
    # \d matches any decimal digit, as it did: the date check (credential vs X-Amz-Date) refuses it later.
    headers = signed("GET", "/b", KEY_ID, SECRET)["headers"]
    date = headers["X-Amz-Date"][:8]
    arabic = "".join(chr(0x0660 + int(d)) for d in date)
    request = sigv4.parse("GET", "/b", "", {**headers, "Authorization": headers["Authorization"].replace(
        f"/{date}/", f"/{arabic}/")})
    assert request.credential.date == arabic
