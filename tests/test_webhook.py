"""Sans-I/O webhook parsing: signatures, headers, bodies."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from forgea_gh import errors, webhook
from tests.support import SECRET, push_body, signed_headers

SECRETS = [SECRET.encode()]


def test_valid_signature_verifies() -> None:
    body = b'{"zen": "Design for failure."}'
    webhook.verify_signature(body, webhook.sign(body, SECRET.encode()), SECRETS)


def test_signature_of_another_body_is_rejected() -> None:
    signature = webhook.sign(b'{"a": 1}', SECRET.encode())
    with pytest.raises(errors.SignatureError, match="does not match"):
        webhook.verify_signature(b'{"a": 2}', signature, SECRETS)


def test_signature_with_another_secret_is_rejected() -> None:
    body = b"{}"
    with pytest.raises(errors.SignatureError, match="does not match"):
        webhook.verify_signature(body, webhook.sign(body, b"other"), SECRETS)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_signature_is_rejected(header: str | None) -> None:
    with pytest.raises(errors.SignatureError, match="missing"):
        webhook.verify_signature(b"{}", header, SECRETS)


def test_sha1_style_signature_is_rejected() -> None:
    with pytest.raises(errors.SignatureError, match="sha256="):
        webhook.verify_signature(b"{}", "sha1=" + "0" * 40, SECRETS)


def test_every_configured_secret_verifies_during_rotation() -> None:
    body = b'{"x": 1}'
    rotating = [b"new-secret", b"old-secret"]
    webhook.verify_signature(body, webhook.sign(body, b"old-secret"), rotating)
    webhook.verify_signature(body, webhook.sign(body, b"new-secret"), rotating)
    with pytest.raises(errors.SignatureError):
        webhook.verify_signature(body, webhook.sign(body, b"retired"), rotating)


def test_uppercase_hex_signature_verifies() -> None:
    body = b"{}"
    signature = webhook.sign(body, SECRET.encode())
    webhook.verify_signature(body, "sha256=" + signature[7:].upper(), SECRETS)


def test_delivery_from_json_request() -> None:
    body = push_body()
    headers = signed_headers(body, "push", guid="g-1", hook_id=42)
    delivery = webhook.Delivery.from_http(headers, body, SECRETS)
    payload = json.loads(body)
    assert delivery.guid == "g-1"
    assert delivery.hook_id == 42
    assert delivery.event == "push"
    assert delivery.action is None
    assert delivery.repository_id == payload["repository"]["id"]
    assert delivery.body == body
    assert delivery.headers["x-github-delivery"] == "g-1"
    assert delivery.signature_mode == "raw"


def test_delivery_from_form_encoded_request() -> None:
    payload = {"action": "created", "installation": {"id": 7}, "zen": "a/b ünï"}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    headers = signed_headers(body, "installation", content_type=webhook.FORM)
    delivery = webhook.Delivery.from_http(headers, body, SECRETS)
    assert delivery.action == "created"
    assert delivery.installation_id == 7
    assert webhook.decode_payload(delivery.content_type, delivery.body) == payload


def test_form_signature_covers_the_raw_form_body() -> None:
    payload = json.dumps({"action": "created"})
    body = urllib.parse.urlencode({"payload": payload}).encode()
    headers = signed_headers(payload.encode(), "installation", content_type=webhook.FORM)
    with pytest.raises(errors.SignatureError):
        webhook.Delivery.from_http(headers, body, SECRETS)


def test_missing_hook_id_stands_as_zero() -> None:
    body = b"{}"
    delivery = webhook.Delivery.from_http(signed_headers(body, "ping"), body, SECRETS)
    assert delivery.hook_id == 0


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("x-github-event", {}, "missing X-GitHub-Event"),
        ("x-github-delivery", {}, "missing X-GitHub-Delivery"),
        (None, {"x-github-hook-id": "abc"}, "X-GitHub-Hook-ID"),
        (None, {"x-github-event": "Push Event"}, "not an event name"),
        (None, {"x-github-delivery": "has spaces in it"}, "not a delivery GUID"),
    ],
)
def test_bad_headers_are_named(drop: str | None, change: dict[str, str], message: str) -> None:
    body = b"{}"
    headers = signed_headers(body, "push") | change
    if drop:
        del headers[drop]
    with pytest.raises(errors.BadDeliveryError, match=message):
        webhook.Delivery.from_http(headers, body, SECRETS)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"not json", webhook.JSON, "not valid JSON"),
        (b"[1, 2]", webhook.JSON, "JSON object"),
        (b"\xff\xfe{}", webhook.JSON, "not valid JSON"),
        (b"other=1", webhook.FORM, "exactly one payload="),
        (b"payload=%7B&payload=%7B", webhook.FORM, "exactly one payload="),
    ],
)
def test_bad_bodies_are_named(body: bytes, content_type: str, message: str) -> None:
    headers = signed_headers(body, "push", content_type=content_type)
    with pytest.raises(errors.BadDeliveryError, match=message):
        webhook.Delivery.from_http(headers, body, SECRETS)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_other_media_types_are_unsupported(content_type: str | None) -> None:
    body = b"{}"
    headers = signed_headers(body)
    del headers["content-type"]
    if content_type:
        headers["content-type"] = content_type
    with pytest.raises(webhook.UnsupportedMediaTypeError):
        webhook.Delivery.from_http(headers, body, SECRETS)


def test_content_type_parameters_are_allowed() -> None:
    body = b"{}"
    headers = signed_headers(body, content_type="application/json; charset=utf-8")
    assert webhook.Delivery.from_http(headers, body, SECRETS).content_type == webhook.JSON


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    body = b"not json"
    headers = signed_headers(body, secret="wrong")
    with pytest.raises(errors.SignatureError):
        webhook.Delivery.from_http(headers, body, SECRETS)


@pytest.mark.parametrize("hook_id", ["9223372036854775808", "99999999999999999999", "¹", "1e3"])
def test_hook_ids_outside_sqlite_integers_are_refused(hook_id: str) -> None:
    body = b"{}"
    headers = signed_headers(body) | {"x-github-hook-id": hook_id}
    with pytest.raises(errors.BadDeliveryError, match="64-bit integer"):
        webhook.Delivery.from_http(headers, body, SECRETS)


def test_the_largest_hook_id_is_accepted() -> None:
    body = b"{}"
    headers = signed_headers(body) | {"x-github-hook-id": str(2**63 - 1)}
    assert webhook.Delivery.from_http(headers, body, SECRETS).hook_id == 2**63 - 1
