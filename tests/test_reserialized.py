"""Re-serialized bodies (webhook.accept_reserialized): what verifies, and what never does.

smee.io parses GitHub's body and smee-client re-encodes it with
JSON.stringify; GitHub signed its own encoding. Accepting the re-encoded
body must need GitHub's signature over a canonical encoding of the very same
document: tampering, foreign signatures and moved signatures stay rejected.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from forgea_gh import app as app_mod
from forgea_gh import errors, webhook
from tests.smee_channel import GITHUB_STYLES, TRICKY_PAYLOADS, github_body, js_stringify
from tests.support import SECRET, asgi_client, fixture_payloads, make_config, signed_headers

SECRETS = [SECRET.encode()]

# Bodies as GitHub's encoder writes them, by hand (not by the code under test):
# raw UTF-8, upper-case hex in control escapes, "\/", \u escapes for non-ASCII.
HANDWRITTEN = [
    (
        b'{"action":"opened","issue":{"title":"Caf\xc3\xa9 \\u001B[1mbold\\u001B[0m",'
        b'"body":"a\\nb\\tc \\u0007","url":"https://api.github.com/repos/o/r/issues/1"},'
        b'"repository":{"id":42}}'
    ),
    (
        b'{"action":"created","comment":{"body":"see https:\\/\\/example.com\\/x",'
        b'"user":{"login":"\\u00e9mile"}},"emoji":"\\ud83d\\ude80","n":[1,2.5,-3]}'
    ),
    b'{\n  "zen": "Keep it logically awesome. \\u001F",\n  "hook_id": 7,\n  "hook": {}\n}\n',
]
# JSON.stringify(JSON.parse(...)) of each, by hand.
HANDWRITTEN_STRINGIFIED = [
    (
        b'{"action":"opened","issue":{"title":"Caf\xc3\xa9 \\u001b[1mbold\\u001b[0m",'
        b'"body":"a\\nb\\tc \\u0007","url":"https://api.github.com/repos/o/r/issues/1"},'
        b'"repository":{"id":42}}'
    ),
    (
        b'{"action":"created","comment":{"body":"see https://example.com/x",'
        b'"user":{"login":"\xc3\xa9mile"}},"emoji":"\xf0\x9f\x9a\x80","n":[1,2.5,-3]}'
    ),
    b'{"zen":"Keep it logically awesome. \\u001f","hook_id":7,"hook":{}}',
]


def deliver(body: bytes, headers: dict[str, str], *, enabled: bool = True) -> webhook.Delivery:
    return webhook.Delivery.from_http(headers, body, SECRETS, accept_reserialized=enabled)


def github_deliveries() -> list[bytes]:
    bodies = list(HANDWRITTEN)
    for payload in TRICKY_PAYLOADS:
        bodies += [github_body(payload, style) for style in GITHUB_STYLES]
    return bodies


# -- the encodings -----------------------------------------------------------


@pytest.mark.parametrize("index", range(len(HANDWRITTEN)))
def test_json_stringify_emulation_matches_handwritten(index: int) -> None:
    assert js_stringify(HANDWRITTEN[index]) == HANDWRITTEN_STRINGIFIED[index]


@pytest.mark.parametrize("body", github_deliveries())
def test_canonical_encodings_reproduce_githubs_bytes(body: bytes) -> None:
    assert body in webhook.canonical_encodings(json.loads(body))


def test_every_encoding_parses_back_to_the_same_document() -> None:
    documents: list[Any] = [*TRICKY_PAYLOADS, {"lone": "\ud800 \udfff"}]
    documents += [json.loads(path.read_bytes()) for _, path in fixture_payloads()]
    for document in documents:
        for style in webhook.RESERIALIZED_STYLES:
            encoded = webhook.encode_json(document, style)
            assert json.loads(encoded) == document, style
            assert list(json.loads(encoded)) == list(document)  # key order kept


@pytest.mark.parametrize(
    "document",
    [
        *TRICKY_PAYLOADS,
        {"plain": "ascii only", "n": 1},
        {"url": "a/b"},
        {"ctl": "\u001b"},
        {"short": "\n\t"},
        {"é": 1},
        {"lone": "\udfff"},
        [],
    ],
)
def test_skipping_options_that_change_nothing_loses_no_encoding(document: Any) -> None:
    every = {webhook.encode_json(document, style) for style in webhook.RESERIALIZED_STYLES}
    encodings = webhook.canonical_encodings(document)
    assert len(encodings) == len(set(encodings))
    assert set(encodings) == every


def test_there_are_sixteen_styles_and_repeats_are_dropped() -> None:
    assert len(set(webhook.RESERIALIZED_STYLES)) == 16
    assert webhook.canonical_encodings({"a": 1}) == [b'{"a":1}', b'{\n  "a": 1\n}\n']


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_json_stringify_emulation_matches_node() -> None:
    bodies = [*HANDWRITTEN, *(github_body(p, GITHUB_STYLES[0]) for p in TRICKY_PAYLOADS)]
    bodies.append(b'{"lone":"\\ud800 \\uDFFF","del":"\x7f","ls":"\\u2028"}')
    script = (
        "const lines = require('fs').readFileSync(0, 'utf8').split('\\n');"
        "for (const l of lines) console.log(JSON.stringify(JSON.parse(l)));"
    )
    stdin = b"\n".join(js_stringify(b) for b in bodies)  # one line each: compact
    node = subprocess.run(
        ["node", "-e", script], input=stdin, capture_output=True, check=True, timeout=30
    )
    assert node.stdout.splitlines() == [js_stringify(b) for b in bodies]
    # And straight from GitHub's bytes (no Python parse in between):
    for body in bodies:
        direct = subprocess.run(
            [
                "node",
                "-e",
                "process.stdout.write(JSON.stringify(JSON.parse("
                "require('fs').readFileSync(0, 'utf8'))))",
            ],
            input=body,
            capture_output=True,
            check=True,
            timeout=30,
        )
        assert direct.stdout == js_stringify(body)


# -- what verifies -----------------------------------------------------------


@pytest.mark.parametrize("body", github_deliveries())
def test_reserialized_body_verifies_only_when_enabled(body: bytes) -> None:
    headers = signed_headers(body, "issues", guid="g-1", hook_id=5)
    forwarded = js_stringify(body)
    delivery = deliver(forwarded, headers)
    assert delivery.signature_mode == "reserialized"
    assert delivery.body == forwarded  # stored as it arrived
    assert webhook.decode_payload(delivery.content_type, delivery.body) == json.loads(body)
    with pytest.raises(errors.SignatureError, match="does not match the body"):
        deliver(forwarded, headers, enabled=False)


def test_raw_body_stays_raw_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object) -> None:
        raise AssertionError("the re-encoding path ran for a body that verifies as it is")

    monkeypatch.setattr(webhook, "verify_reserialized", must_not_run)
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    delivery = deliver(body, signed_headers(body, "issues"))
    assert delivery.signature_mode == "raw"
    assert delivery.body == body


def test_fields_come_from_the_verified_document() -> None:
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[1])
    delivery = deliver(js_stringify(body), signed_headers(body, "issues", guid="g-2"))
    assert (delivery.action, delivery.repository_id, delivery.installation_id) == (
        "opened",
        4242,
        99,
    )
    assert delivery.guid == "g-2"


# -- what never verifies -----------------------------------------------------


def test_tampered_body_is_rejected() -> None:
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    headers = signed_headers(body, "issues")
    forwarded = js_stringify(body)
    for tampered in (
        forwarded.replace(b'"opened"', b'"deleted"'),
        forwarded.replace(b'"id":4242', b'"id":4243'),
        forwarded.replace("zoë".encode(), b"zoe"),
        forwarded[:-1] + b',"extra":1}',
    ):
        assert tampered != forwarded
        with pytest.raises(errors.SignatureError, match="nor any canonical re-encoding"):
            deliver(tampered, headers)


def test_signature_of_another_body_is_rejected() -> None:
    signed = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    other = github_body(TRICKY_PAYLOADS[1], GITHUB_STYLES[0])
    headers = signed_headers(signed, "issues")
    for body in (other, js_stringify(other)):
        with pytest.raises(errors.SignatureError):
            deliver(body, headers)


def test_valid_signature_moved_to_another_payload_is_rejected() -> None:
    first = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    second = github_body(TRICKY_PAYLOADS[1], GITHUB_STYLES[2])
    first_headers = signed_headers(first, "issues", guid="g-a")
    second_headers = signed_headers(second, "issues", guid="g-b")
    # Each verifies with its own signature ...
    deliver(js_stringify(first), first_headers)
    deliver(js_stringify(second), second_headers)
    # ... and neither with the other's.
    with pytest.raises(errors.SignatureError):
        deliver(js_stringify(second), first_headers)
    with pytest.raises(errors.SignatureError):
        deliver(js_stringify(first), second_headers)


def test_signature_under_another_secret_is_rejected() -> None:
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    headers = signed_headers(body, "issues", secret="attacker-secret")
    with pytest.raises(errors.SignatureError):
        deliver(js_stringify(body), headers)


def test_reordered_keys_are_rejected() -> None:
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    document = json.loads(body)
    reordered = dict(reversed(list(document.items())))
    with pytest.raises(errors.SignatureError):
        deliver(webhook.encode_json(reordered), signed_headers(body, "issues"))


def test_repeated_key_is_rejected() -> None:
    # Last-wins parsers would see the signed document; first-wins ones would not.
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    smuggled = b'{"action":"deleted",' + js_stringify(body)[1:]
    assert json.loads(smuggled) == json.loads(body)
    with pytest.raises(errors.SignatureError):
        deliver(smuggled, signed_headers(body, "issues"))


@pytest.mark.parametrize("body", [b"not json", b"\xff{}", b'{"a": NaN}', b'{"a": 1e999}'])
def test_unparsable_body_is_a_signature_error_not_a_400(body: bytes) -> None:
    headers = signed_headers(b'{"a":1}', "issues")
    with pytest.raises(errors.SignatureError):
        deliver(body, headers)


def test_missing_signature_is_still_missing() -> None:
    body = b'{"a":1}'
    headers = signed_headers(body, "issues")
    del headers["x-hub-signature-256"]
    with pytest.raises(errors.SignatureError, match="missing"):
        deliver(body, headers)


def test_form_bodies_have_no_reserialized_path() -> None:
    import urllib.parse

    payload = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    signed = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    forwarded = urllib.parse.urlencode({"payload": js_stringify(payload).decode()}).encode()
    headers = signed_headers(signed, "issues", content_type=webhook.FORM)
    with pytest.raises(errors.SignatureError):
        deliver(forwarded, headers)


def test_exponent_and_integral_floats_fail_closed() -> None:
    # A documented limit: JSON.stringify spells these numbers differently and
    # the original spelling cannot be recovered, so the body is rejected
    # rather than guessed at. (GitHub's bytes, what smee-client forwards.)
    for signed, forwarded in (
        (b'{"f":1.0}', b'{"f":1}'),
        (b'{"f":1.0e-07}', b'{"f":1e-7}'),
        (b'{"f":12345678901234567890123}', b'{"f":1.2345678901234568e+22}'),
    ):
        with pytest.raises(errors.SignatureError):
            deliver(forwarded, signed_headers(signed, "issues"))


# -- through the receiver ----------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
async def test_receiver_passes_the_setting(tmp_path: Path, enabled: bool) -> None:
    config = make_config(tmp_path, webhook={"accept_reserialized": enabled})
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[1])
    forwarded = js_stringify(body)
    async with asgi_client(app_mod.build(config, role=app_mod.Role.RECEIVER)) as client:
        response = await client.post(
            "/webhooks/github", content=forwarded, headers=signed_headers(body, "issues")
        )
    conn = sqlite3.connect(config.database.sqlite_path)
    rows = conn.execute("SELECT body, signature_mode FROM deliveries").fetchall()
    conn.close()
    if enabled:
        assert response.status_code == 202
        assert rows == [(forwarded, "reserialized")]
    else:
        assert response.status_code == 401
        assert rows == []
