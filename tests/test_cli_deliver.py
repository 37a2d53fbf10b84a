"""`forgea-gh deliver --form / --url`, and `serve`'s warning for accept_reserialized."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.parse
from pathlib import Path

from forgea_gh import app as app_mod
from forgea_gh import webhook
from tests.smee_channel import TRICKY_PAYLOADS
from tests.support import SECRET, live_server, make_config
from tests.support import run_cli as forgea


def rows(db: Path) -> list[tuple[str, str, bytes, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT guid, content_type, body, headers FROM deliveries ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def payload_file(tmp_path: Path) -> tuple[Path, bytes]:
    # Non-ASCII, "&", "=", "+" and "/" all need form encoding.
    payload = TRICKY_PAYLOADS[0] | {"query": "a=1&b=2+3 /x?y", "zen": "½ é"}
    text = json.dumps(payload, ensure_ascii=False, indent=2).encode()
    path = tmp_path / "payload.json"
    path.write_bytes(text)
    return path, text


async def test_deliver_form_encoded_to_a_url(tmp_path: Path) -> None:
    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    config = make_config(daemon_dir)
    path, text = payload_file(tmp_path)
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as base_url:
        url = f"{base_url}/webhooks/github"
        form = await asyncio.to_thread(
            forgea,
            tmp_path,
            "deliver",
            str(path),
            "--event",
            "issues",
            "--delivery",
            "f-1",
            "--form",
            "--url",
            url,
            "--json",
        )
        assert form.returncode == 0, form.stderr
        sent = json.loads(form.stdout)
        assert (sent["url"], sent["status_code"]) == (url, 202)
        as_json = await asyncio.to_thread(
            forgea, tmp_path, "deliver", str(path), "--event", "issues", "--url", url
        )
        assert as_json.returncode == 0, as_json.stderr
        assert as_json.stdout.startswith("202 ")
    (guid, content_type, body, headers), (_, json_type, json_body, _) = rows(
        Path(config.database.sqlite_path)
    )
    assert (guid, content_type) == ("f-1", webhook.FORM)
    assert urllib.parse.parse_qs(body.decode("ascii")) == {"payload": [text.decode()]}
    assert json.loads(headers)["x-hub-signature-256"] == webhook.sign(body, SECRET.encode())
    assert webhook.decode_payload(content_type, body) == json.loads(text)
    assert (json_type, json_body) == (webhook.JSON, text)


async def test_deliver_url_overrides_the_configured_port(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path, _ = payload_file(tmp_path)
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as base_url:
        # The config points at port 1: only --url can reach the daemon.
        env = {"FORGEA_GH_SERVER__PORT": "1"}
        missed = await asyncio.to_thread(
            forgea, tmp_path, "deliver", str(path), "--event", "push", env=env
        )
        assert missed.returncode == 1
        assert "cannot deliver to http://127.0.0.1:1/webhooks/github" in missed.stderr
        hit = await asyncio.to_thread(
            forgea,
            tmp_path,
            "deliver",
            str(path),
            "--event",
            "push",
            "--url",
            f"{base_url}/webhooks/github",
            env=env,
        )
        assert hit.returncode == 0, hit.stderr
        wrong_path = await asyncio.to_thread(
            forgea, tmp_path, "deliver", str(path), "--event", "push", "--url", f"{base_url}/x"
        )
        assert wrong_path.returncode == 1
        assert wrong_path.stdout.startswith("404 ")
    assert len(rows(Path(config.database.sqlite_path))) == 1


async def test_form_delivery_signed_with_another_secret_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path, _ = payload_file(tmp_path)
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as base_url:
        result = await asyncio.to_thread(
            forgea,
            tmp_path,
            "deliver",
            str(path),
            "--event",
            "push",
            "--form",
            "--url",
            f"{base_url}/webhooks/github",
            env={"FORGEA_GH_WEBHOOK__SECRETS": '["other"]'},
        )
    assert result.returncode == 1
    assert result.stdout.startswith("401 ")


def test_form_needs_a_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xe9"}')
    result = forgea(tmp_path, "deliver", str(path), "--event", "push", "--form")
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr


def test_a_missing_file_is_named_without_a_traceback(tmp_path: Path) -> None:
    result = forgea(tmp_path, "deliver", str(tmp_path / "nope.json"), "--event", "push")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"forgea-gh: cannot read {tmp_path / 'nope.json'}: No such file or directory"
    )


def test_serve_warns_when_accept_reserialized_is_on(tmp_path: Path) -> None:
    # A newer database stops serve right after the warnings: no server needed.
    assert forgea(tmp_path, "db", "init").returncode == 0
    conn = sqlite3.connect(tmp_path / "forgea.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    on = forgea(
        tmp_path, "serve", "--port", "0", env={"FORGEA_GH_WEBHOOK__ACCEPT_RESERIALIZED": "true"}
    )
    assert on.returncode == 1
    assert "WARNING: webhook.accept_reserialized is on" in on.stderr
    off = forgea(tmp_path, "serve", "--port", "0")
    assert "accept_reserialized" not in off.stderr
