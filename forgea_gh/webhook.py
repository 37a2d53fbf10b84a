"""Sans-I/O webhook parsing: bytes and header mappings in, a `Delivery` out.

Nothing here touches a socket or a database, so every rule is testable with
plain values. See https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
and https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from forgea_gh import errors

SIGNATURE_PREFIX = "sha256="
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# Headers kept with the delivery: what an operator needs to understand or
# re-verify it later. Everything else GitHub sends is routing noise.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-github-hook-installation-target-type",
    "x-github-hook-installation-target-id",
    "x-hub-signature-256",
)

_GUID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_EVENT = re.compile(r"[a-z0-9_]{1,64}")


class UnsupportedMediaTypeError(errors.BadDeliveryError):
    """The body is neither JSON nor form-encoded."""


def sign(body: bytes, secret: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub would send for `body`."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secrets: Sequence[bytes]) -> None:
    """Raise SignatureError unless `header` is the HMAC of `body` under one of `secrets`.

    Every secret is tried, so a new secret can be added before the old one is
    retired. Comparison is constant-time.
    """
    if not header:
        raise errors.SignatureError("missing X-Hub-Signature-256 header")
    if not header.startswith(SIGNATURE_PREFIX):
        raise errors.SignatureError("X-Hub-Signature-256 must start with 'sha256='")
    given = header[len(SIGNATURE_PREFIX) :].strip().lower().encode()
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return
    raise errors.SignatureError("X-Hub-Signature-256 does not match the body")


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, or raise UnsupportedMediaTypeError."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    if bare not in (JSON, FORM):
        shown = bare or "none"
        raise UnsupportedMediaTypeError(
            f"unsupported content type {shown!r}: send {JSON} or {FORM} (payload=...)"
        )
    return bare


def decode_payload(content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON object a webhook body carries, for either content type GitHub sends."""
    if media_type(content_type) == FORM:
        try:
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise errors.BadDeliveryError("form-encoded body is malformed") from None
        values = fields.get("payload", [])
        if len(values) != 1:
            raise errors.BadDeliveryError("form-encoded body must carry exactly one payload=")
        raw: bytes | str = values[0]
    else:
        raw = body
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.BadDeliveryError(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise errors.BadDeliveryError("body must be a JSON object")
    return payload


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified webhook request, as the store keeps it."""

    guid: str
    hook_id: int
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    headers: dict[str, str]
    content_type: str
    body: bytes
    body_sha256: str
    signature_mode: str = "raw"

    @classmethod
    def from_http(
        cls, headers: Mapping[str, str], body: bytes, secrets: Sequence[bytes]
    ) -> Delivery:
        """Validate a webhook request; raise the error that names what is wrong.

        Order matters: headers are checked before the signature, and the body
        is parsed only after the signature proves who sent it.
        """
        content_type = media_type(headers.get("content-type"))
        event = headers.get("x-github-event")
        if not event:
            raise errors.BadDeliveryError("missing X-GitHub-Event header")
        if not _EVENT.fullmatch(event):
            raise errors.BadDeliveryError("X-GitHub-Event is not an event name")
        guid = headers.get("x-github-delivery")
        if not guid:
            raise errors.BadDeliveryError("missing X-GitHub-Delivery header")
        if not _GUID.fullmatch(guid):
            raise errors.BadDeliveryError("X-GitHub-Delivery is not a delivery GUID")
        hook_id = _hook_id(headers.get("x-github-hook-id"))
        verify_signature(body, headers.get("x-hub-signature-256"), secrets)
        payload = decode_payload(content_type, body)
        action = payload.get("action")
        return cls(
            guid=guid,
            hook_id=hook_id,
            event=event,
            action=action if isinstance(action, str) else None,
            installation_id=_nested_id(payload, "installation"),
            repository_id=_nested_id(payload, "repository"),
            headers={k: v for k in KEPT_HEADERS if (v := headers.get(k)) is not None},
            content_type=content_type,
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
        )


def _hook_id(value: str | None) -> int:
    # Absent on some deliveries (e.g. smee forwarding, old GHES): 0 stands in,
    # so UNIQUE(guid, hook_id) still holds.
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 19:
        raise errors.BadDeliveryError("X-GitHub-Hook-ID must be a non-negative integer")
    return int(value)


def _nested_id(payload: Mapping[str, Any], key: str) -> int | None:
    obj = payload.get(key)
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
