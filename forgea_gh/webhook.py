"""Sans-I/O webhook parsing: bytes and header mappings in, a `Delivery` out.

Nothing here touches a socket or a database, so every rule is testable with
plain values. See https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
and https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers

Re-serialized bodies (local forwarding only, `webhook.accept_reserialized`):
smee.io parses the body GitHub sent and smee-client re-encodes it with
`JSON.stringify`, so the bytes that arrive are not the bytes GitHub signed.
The parsed document is still the one GitHub signed, so `verify_reserialized`
re-encodes it in each style GitHub's encoder may have used
(`canonical_encodings`) and accepts only an exact HMAC match: whoever lacks
the secret still gets nothing accepted.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    given = _given_digest(header)
    if not _signed_by_any(body, given, secrets):
        raise errors.SignatureError("X-Hub-Signature-256 does not match the body")


def _given_digest(header: str | None) -> bytes:
    if not header:
        raise errors.SignatureError("missing X-Hub-Signature-256 header")
    if not header.startswith(SIGNATURE_PREFIX):
        raise errors.SignatureError("X-Hub-Signature-256 must start with 'sha256='")
    return header[len(SIGNATURE_PREFIX) :].strip().lower().encode()


def _signed_by_any(body: bytes, given: bytes, secrets: Sequence[bytes]) -> bool:
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return True
    return False


# -- re-serialized bodies (smee.io forwarding) --------------------------------


@dataclass(frozen=True, slots=True)
class JsonStyle:
    r"""One way of writing a JSON document; the defaults are `JSON.stringify(value)`.

    Every style escapes `"` and `\` and writes \b \f \n \r \t short; other
    control characters (and lone surrogates) become \u00XX escapes. Objects
    keep their key order.
    """

    # Non-ASCII text as \u escapes ("é" as \u00e9; surrogate pairs above U+FFFF),
    # not raw UTF-8.
    ascii_only: bool = False
    # \u escapes with upper-case hex, \u001B (GitHub's bodies), not \u001b (JSON.stringify).
    upper_hex: bool = False
    # "/" written as "\/".
    escape_solidus: bool = False
    # Compact (no whitespace), or JSON.stringify(value, null, 2) + "\n".
    pretty: bool = False


# What smee-client forwards: JSON.stringify of the parsed body.
JS_STRINGIFY = JsonStyle()

# Every style GitHub's body may have been written in, most likely first:
# compact, raw UTF-8, upper-case hex in control escapes (\u001B) is what
# GitHub's deliveries show (https://github.com/octokit/webhooks.js/issues/71,
# https://github.com/octokit/webhooks.js/pull/72); "\/" and \u escapes for
# non-ASCII are what Ruby encoders write on request; the pretty layout is
# what octokit later normalized to (src/to-normalized-json-string.ts there).
RESERIALIZED_STYLES: tuple[JsonStyle, ...] = tuple(
    JsonStyle(ascii_only=a, upper_hex=u, escape_solidus=e, pretty=p)
    for p, a, e, u in itertools.product((False, True), (False, True), (False, True), (True, False))
)

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "/": "\\/",
}


@functools.cache
def _string_encoder(
    ascii_only: bool, upper_hex: bool, escape_solidus: bool
) -> Callable[[str], str]:
    escaped = r'\x00-\x1f"\\'
    escaped += r"\x80-\U0010ffff" if ascii_only else r"\ud800-\udfff"
    if escape_solidus:
        escaped += "/"
    pattern = re.compile(f"[{escaped}]")
    hex_format = "\\u{:04X}" if upper_hex else "\\u{:04x}"

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        short = _SHORT_ESCAPES.get(char)
        if short is not None:
            return short
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            return hex_format.format(0xD800 | (code >> 10)) + hex_format.format(
                0xDC00 | (code & 0x3FF)
            )
        return hex_format.format(code)

    return lambda text: '"' + pattern.sub(escape, text) + '"'


def encode_json(value: Any, style: JsonStyle = JS_STRINGIFY) -> bytes:
    """`value` (as json.loads returns it) written in `style`, as UTF-8 bytes.

    Integers are written exactly; floats as Python's shortest round-trip repr,
    which equals JavaScript's and Ruby's for plain decimals (1.5, 0.25) but not
    for exponents or integral floats (1e-07, 1.0): bodies holding those are not
    reproduced, so they fail closed.
    """
    encode_string = _string_encoder(style.ascii_only, style.upper_hex, style.escape_solidus)
    parts: list[str] = []
    _encode_into(value, encode_string, style.pretty, 0, parts)
    if style.pretty:
        parts.append("\n")
    return "".join(parts).encode("utf-8")


def _encode_into(
    value: Any, encode_string: Callable[[str], str], pretty: bool, depth: int, parts: list[str]
) -> None:
    if isinstance(value, str):
        parts.append(encode_string(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("JSON has no infinite or NaN numbers")
        parts.append(repr(value))
    elif isinstance(value, dict | list):
        if not value:
            parts.append("{}" if isinstance(value, dict) else "[]")
            return
        inner = "\n" + "  " * (depth + 1) if pretty else ""
        members: Iterable[tuple[str | None, Any]]
        if isinstance(value, dict):
            opening, closing, members = "{", "}", value.items()
        else:
            opening, closing, members = "[", "]", ((None, item) for item in value)
        parts.append(opening)
        for index, (key, item) in enumerate(members):
            if index:
                parts.append(",")
            parts.append(inner)
            if key is not None:
                parts.append(encode_string(key))
                parts.append(": " if pretty else ":")
            _encode_into(item, encode_string, pretty, depth + 1, parts)
        if pretty:
            parts.append("\n" + "  " * depth)
        parts.append(closing)
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_encodings(payload: Any) -> list[bytes]:
    """`payload` written in every style of RESERIALIZED_STYLES, without repeats.

    A style option that cannot change this payload's bytes (no "/" in its
    text, say) is not tried twice: fewer encodings, the same set of bytes.
    """
    non_ascii, hex_escapes, solidus = _text_features(payload)
    styles: dict[JsonStyle, None] = {}
    for style in RESERIALIZED_STYLES:
        ascii_only = style.ascii_only and non_ascii
        effective = JsonStyle(
            ascii_only=ascii_only,
            upper_hex=style.upper_hex and (hex_escapes or ascii_only),
            escape_solidus=style.escape_solidus and solidus,
            pretty=style.pretty,
        )
        styles[effective] = None
    return list(dict.fromkeys(encode_json(payload, style) for style in styles))


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Characters every style writes as a \u escape.
_HEX_ESCAPED = re.compile(r"[\x00-\x07\x0b\x0e-\x1f\ud800-\udfff]")


def _text_features(value: Any) -> tuple[bool, bool, bool]:
    """Whether the document's text (keys included) holds non-ASCII, \\u-escaped, "/"."""
    non_ascii = hex_escapes = solidus = False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            non_ascii = non_ascii or _NON_ASCII.search(item) is not None
            hex_escapes = hex_escapes or _HEX_ESCAPED.search(item) is not None
            solidus = solidus or "/" in item
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return non_ascii, hex_escapes, solidus


def verify_reserialized(body: bytes, header: str | None, secrets: Sequence[bytes]) -> Any:
    """The document `body` holds, if GitHub signed some canonical encoding of it.

    For bodies that were parsed and re-encoded on the way (smee.io): the HMAC
    must match one of `canonical_encodings` of the parsed body exactly, so the
    document is the one GitHub signed, only its bytes differ. A body with a
    repeated object key is refused: parsers disagree on which value wins.
    Raise SignatureError otherwise (an unparsable body included: nothing
    unauthenticated gets a more specific answer).
    """
    given = _given_digest(header)
    try:
        document = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise errors.SignatureError(
            "X-Hub-Signature-256 does not match the body, and the body is not a JSON "
            "document to re-encode"
        ) from None
    for encoding in canonical_encodings(document):
        if _signed_by_any(encoding, given, secrets):
            return document
    raise errors.SignatureError(
        "X-Hub-Signature-256 does not match the body nor any canonical re-encoding of it"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("repeated object key")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a double")
    return value


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
    signature_mode: str = "raw"

    @property
    def body_sha256(self) -> str:
        # Computed where it is stored (the writer thread), not on the
        # receiver's hot path: hashlib releases the GIL for large bodies.
        return hashlib.sha256(self.body).hexdigest()

    @classmethod
    def from_http(
        cls,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[bytes],
        *,
        accept_reserialized: bool = False,
    ) -> Delivery:
        """Validate a webhook request; raise the error that names what is wrong.

        Order matters: headers are checked before the signature, and the body
        is parsed only after the signature proves who sent it. With
        `accept_reserialized`, a JSON body whose raw bytes do not verify is
        accepted when GitHub signed a canonical re-encoding of the very same
        document (`verify_reserialized`); `signature_mode` then says so.
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
        signature = headers.get("x-hub-signature-256")
        signature_mode = "raw"
        signed: Any = None
        try:
            verify_signature(body, signature, secrets)
        except errors.SignatureError:
            # Only after the raw check failed: the hot path stays one HMAC.
            if not (accept_reserialized and signature and content_type == JSON):
                raise
            signed = verify_reserialized(body, signature, secrets)
            signature_mode = "reserialized"
        payload = decode_payload(content_type, body)
        if signature_mode == "reserialized" and payload != signed:
            # The processor parses the stored body with orjson: it must see
            # exactly the document that was verified.
            raise errors.SignatureError("the body parses differently from the verified document")
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
            signature_mode=signature_mode,
        )


def _hook_id(value: str | None) -> int:
    # Absent on some deliveries (e.g. smee forwarding, old GHES): 0 stands in,
    # so UNIQUE(guid, hook_id) still holds.
    if value is None or value == "":
        return 0
    # ASCII digits only ("¹".isdigit() is true), and within SQLite's integer range.
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_HOOK_ID:
        raise errors.BadDeliveryError("X-GitHub-Hook-ID must be a non-negative 64-bit integer")
    return int(value)


_MAX_HOOK_ID = 2**63 - 1


def _nested_id(payload: Mapping[str, Any], key: str) -> int | None:
    obj = payload.get(key)
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
