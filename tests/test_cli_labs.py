"""`forgea-gh labs …` and `forgea-gh sessions …`, run as subprocesses against a real database."""

from __future__ import annotations

import contextlib
import json
import shlex
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.support import run_cli

REPO_URL = "https://github.com/octocat/demo-lab"


def forgea(tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run `forgea-gh COMMAND --config …` (COMMAND split as a shell would)."""
    # Credentials allow queuing provisioning; nothing here calls GitHub.
    github = '[github]\ntoken = "gh-test-token"\nowner = "forgea"\n'
    return run_cli(tmp_path, *shlex.split(command), extra_config=github)


def ok(tmp_path: Path, command: str) -> Any:
    """Run a command with --json; it must succeed. Its output, parsed."""
    result = forgea(tmp_path, f"{command} --json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fails(tmp_path: Path, command: str, code: int = 1) -> str:
    """Run a command that must fail with one clear line; that line."""
    result = forgea(tmp_path, command)
    assert result.returncode == code, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("forgea-gh: "), result.stderr
    return line.removeprefix("forgea-gh: ")


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "forgea.db")) as conn:
        return conn.execute(sql).fetchall()


def test_labs_add_with_a_first_version_in_one_transaction(tmp_path: Path) -> None:
    added = ok(tmp_path, "labs add demo --title 'Demo lab' --template forgea/demo --version v1")
    assert (added["lab"]["slug"], added["lab"]["title"]) == ("demo", "Demo lab")
    assert added["lab"]["template_repository"] == "forgea/demo"
    assert (added["version"]["version"], added["version"]["template_ref"]) == ("v1", "main")

    v2 = ok(tmp_path, "labs versions add demo v2 --ref release-2")
    assert (v2["lab"], v2["version"], v2["template_ref"]) == ("demo", "v2", "release-2")
    human = forgea(tmp_path, "labs add plain --title Plain --template a/b")
    assert human.returncode == 0, human.stderr
    assert human.stdout.strip() == "lab plain (id 2): Plain, template a/b"

    assert fails(tmp_path, "labs add demo --title Again --template forgea/demo") == (
        "lab 'demo' exists already"
    )
    assert fails(tmp_path, "labs add other --title Other --template no-owner") == (
        "template_repository: must be owner/name"
    )
    assert fails(tmp_path, "labs add Other --title Other --template a/b").startswith("slug: ")
    assert fails(tmp_path, "labs versions add demo v1") == "lab 'demo' has a version 'v1' already"
    assert fails(tmp_path, "labs versions add nope v1") == "no lab 'nope'"
    assert fails(tmp_path, "labs add other --title T --template a/b --ref x", code=2) == (
        "--ref needs --version"
    )
    # A bad first version undoes the lab too: both commit, or neither.
    assert fails(tmp_path, "labs add other --title T --template a/b --version ' '") == (
        "version: must be 1-64 characters"
    )
    assert rows(tmp_path, "SELECT slug FROM labs ORDER BY id") == [("demo",), ("plain",)]


def test_sessions_create_bound_or_provisioning(tmp_path: Path) -> None:
    ok(tmp_path, "labs add demo --title Demo --template forgea/demo --version v1")

    bound = ok(
        tmp_path,
        f"sessions create --lab demo --user octocat --github-id 583231 "
        f"--repo-id 4242 --repo-url {REPO_URL}",
    )
    assert bound["status"] == "ACTIVE"
    assert bound["user"] == {"id": bound["user"]["id"], "login": "octocat", "github_id": 583231}
    assert bound["repository"]["id"] == 4242
    assert bound["repository"]["full_name"] == "octocat/demo-lab"  # from the URL

    named = ok(
        tmp_path,
        f"sessions create --lab demo --user mona --version v1 "
        f"--repo-id 4243 --repo-url {REPO_URL}-2 --repo-name mona/renamed",
    )
    assert named["repository"]["full_name"] == "mona/renamed"

    human = forgea(tmp_path, "sessions create --lab demo --user hubot")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == "session 3: PROVISIONING"
    assert "a provision_repo job is queued for it" in human.stdout
    assert rows(tmp_path, "SELECT payload FROM jobs WHERE kind = 'provision_repo'") == [
        ('{"session_id":3}',)
    ]
    assert rows(
        tmp_path, "SELECT provider_repo_id, lab_session_id FROM github_repo_mappings ORDER BY 1"
    ) == [(4242, 1), (4243, 2)]


def test_sessions_create_errors_are_one_line(tmp_path: Path) -> None:
    create = "sessions create --lab empty --user octocat"
    both = "--repo-id and --repo-url go together: give both or neither"

    assert fails(tmp_path, "sessions create --lab nope --user octocat") == "no lab 'nope'"
    ok(tmp_path, "labs add empty --title Empty --template forgea/empty")
    assert "has no version yet" in fails(tmp_path, create)
    ok(tmp_path, "labs versions add empty v1")
    assert fails(tmp_path, f"{create} --repo-id 5", code=2) == both
    assert fails(tmp_path, f"{create} --repo-url {REPO_URL}", code=2) == both
    assert fails(tmp_path, f"{create} --repo-name a/b", code=2) == (
        "--repo-name needs --repo-id and --repo-url"
    )
    assert fails(tmp_path, f"{create} --repo-id 5 --repo-url 'not a url'").startswith(
        "repository.html_url: "
    )
    assert fails(tmp_path, f"{create} --version v7") == "version: lab 'empty' has no version 'v7'"
    ok(tmp_path, f"{create} --repo-id 5 --repo-url {REPO_URL}")
    assert fails(tmp_path, f"{create} --repo-id 5 --repo-url {REPO_URL}") == (
        "repository 5 is bound to session 1 already"
    )
    assert rows(tmp_path, "SELECT count(*) FROM lab_sessions") == [(1,)]


def test_sessions_show_and_list(tmp_path: Path) -> None:
    for slug in ("alpha", "beta"):
        ok(tmp_path, f"labs add {slug} --title {slug} --template forgea/x --version v1")
    for n, (lab, user) in enumerate([("alpha", "octocat"), ("alpha", "mona"), ("beta", "octocat")]):
        url = f"https://github.com/{user}/{lab}-{n}"
        ok(
            tmp_path,
            f"sessions create --lab {lab} --user {user} --repo-id {n + 1} --repo-url {url}",
        )
    ok(tmp_path, "sessions create --lab beta --user hubot")  # PROVISIONING, id 4

    shown = ok(tmp_path, "sessions show 2")
    assert (shown["id"], shown["lab"], shown["user"]["login"]) == (2, "alpha", "mona")
    human = forgea(tmp_path, "sessions show 2")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == "session 2: ACTIVE"
    assert "mona/alpha-1 (id 2) https://github.com/mona/alpha-1" in human.stdout
    assert fails(tmp_path, "sessions show 99") == "no session 99"

    def ids(filters: str = "") -> list[int]:
        return [s["id"] for s in ok(tmp_path, f"sessions list {filters}")["items"]]

    assert ids() == [4, 3, 2, 1]
    assert ids("--lab alpha") == [2, 1]
    assert ids("--user octocat") == [3, 1]
    assert ids("--status provisioning") == [4]
    assert ids("--status ACTIVE --lab beta") == [3]
    assert ids("--lab gamma") == []

    first = ok(tmp_path, "sessions list --limit 3")
    assert [s["id"] for s in first["items"]] == [4, 3, 2]
    assert first["next_cursor"] == "2"
    rest = ok(tmp_path, f"sessions list --limit 3 --cursor {first['next_cursor']}")
    assert ([s["id"] for s in rest["items"]], rest["next_cursor"]) == ([1], None)

    table = forgea(tmp_path, "sessions list --limit 2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["4", "PROVISIONING", "beta@v1", "hubot"]
    assert lines[1].split()[:5] == ["3", "ACTIVE", "beta@v1", "octocat", "octocat/beta-2"]
    assert lines[-1] == "more: --cursor 3"
    assert forgea(tmp_path, "sessions list --status done").returncode == 2
    assert forgea(tmp_path, "sessions list --limit 0").returncode == 2
