"""`forgea-gh`: argparse sub-commands. No logic of its own: each command
loads settings, calls the module that does the work, and prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from forgea_gh import app as app_mod
from forgea_gh import errors, logs, settings, timeutil, webhook
from forgea_gh import store as store_mod
from forgea_gh.labs import ledger, lifecycle, model, service
from forgea_gh.store import base
from forgea_gh.web import status as status_mod

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ACTOR = "cli"
MAX_PAGE = 500


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = settings.load(args.config)
        logs.configure(config.log.level, config.log.format)
        result: int = args.command(args, config)
        return result
    except errors.ConfigError as exc:
        print(f"forgea-gh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ForgeaError as exc:
        print(f"forgea-gh: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# -- commands ----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, config: settings.Settings) -> int:
    import uvicorn

    role = app_mod.Role(args.role)
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        # Into the settings, so the smee forwarder's default target follows them.
        config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
    if role is not app_mod.Role.WORKER:
        config.require_webhook_secrets()
        if config.uses_development_secret():
            print(
                "forgea-gh: WARNING: webhook.secrets holds the development secret from "
                "config.example.toml; anyone can sign deliveries. Use it for local runs only.",
                file=sys.stderr,
            )
        if config.webhook.accept_reserialized:
            print(
                "forgea-gh: WARNING: webhook.accept_reserialized is on: deliveries whose bytes "
                "were re-encoded on the way (smee.io) are accepted when GitHub signed a "
                "canonical encoding of the same document. Meant for local forwarding only.",
                file=sys.stderr,
            )
        elif config.smee.url:
            print(
                "forgea-gh: note: smee.url is set but webhook.accept_reserialized is off: "
                "deliveries smee.io re-encoded will be refused (401).",
                file=sys.stderr,
            )
    # Open the store once before serving, so a bad database path or schema
    # version ends in one clear line instead of a lifespan traceback.
    _run_with_store(config, lambda store: store.ping())
    web_app = app_mod.build(config, role=role)
    server = uvicorn.Server(
        uvicorn.Config(
            web_app,
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(config.server.shutdown_grace_seconds) + 1,
        )
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; under the
    # default SIGTERM disposition that would kill us with -15 after a clean
    # stop. A recording handler turns the re-raised signal into a no-op.
    stopped_by: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped_by.append(signum))
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK if server.started else EXIT_FAILED


def cmd_db_init(args: argparse.Namespace, config: settings.Settings) -> int:
    report = _run_with_store(config, lambda store: store.check())
    print(f"database ready: {config.database.url} (schema version {report.schema_version})")
    return EXIT_OK


def cmd_db_check(args: argparse.Namespace, config: settings.Settings) -> int:
    path = config.database.sqlite_path
    if path != ":memory:" and not Path(path).exists():
        print(f"forgea-gh: no database at {path} (run `forgea-gh db init`)", file=sys.stderr)
        return EXIT_FAILED
    report = _run_with_store(config, lambda store: store.check())
    data = {
        "backend": report.backend,
        "schema_version": report.schema_version,
        "expected_version": report.expected_version,
        "problems": report.problems,
        **report.facts,
    }
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            if key != "problems":
                print(f"{key}: {value}")
        print("ok" if not report.problems else "problems:\n  " + "\n  ".join(report.problems))
    return EXIT_OK if not report.problems else EXIT_FAILED


def cmd_status(args: argparse.Namespace, config: settings.Settings) -> int:
    summary = _run_with_store(config, lambda store: store.status_summary(timeutil.utcnow()))
    data = status_mod.summary_json(summary, github_reporting=config.github_configured())
    if args.json:
        _print_json(data)
        return EXIT_OK
    print(f"backend: {data['backend']}")
    for name, count in data["jobs"].items():
        print(f"  {name:<12} {count}")
    print(f"oldest pending age: {_or_none(data['oldest_pending_age_seconds'], '{:.1f}s')}")
    print(f"last processed at:  {data['last_processed_at'] or 'never'}")
    return EXIT_OK


def cmd_dead_letters_list(args: argparse.Namespace, config: settings.Settings) -> int:
    filters = base.DeadLetterFilter(
        kind=args.kind, event=args.event, action=args.action, guid=args.guid
    )
    page = _run_with_store(
        config, lambda store: store.dead_letters(filters, args.cursor, args.limit)
    )
    if args.json:
        _print_json({"items": page.items, "next_cursor": page.next_cursor})
        return EXIT_OK
    if not page.items:
        print("no dead letters")
    for item in page.items:
        print(
            f"{item['id']:>8}  {item['kind']:<10} {item['event'] or '-':<24} "
            f"{item['guid'] or '-':<38} attempts {item['attempts']}  {item['last_error']}"
        )
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


def cmd_dead_letters_show(args: argparse.Namespace, config: settings.Settings) -> int:
    item = _run_with_store(config, lambda store: store.dead_letter(args.job_id, args.payload))
    if args.json:
        _print_json(item)
        return EXIT_OK
    for key, value in item.items():
        if key not in ("errors", "payload", "headers"):
            print(f"{key}: {value}")
    print("errors:")
    for err in item["errors"]:
        print(f"  #{err['attempt']} {err['occurred_at']} {err['error_class']}: {err['message']}")
    if args.payload:
        print("payload:")
        print(orjson.dumps(item["payload"], option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, config: settings.Settings) -> int:
    if args.event is not None and not args.all_dead:
        # Silently replaying the one job named, whatever its event, would
        # surprise whoever typed the filter.
        return _usage("--event filters --all-dead only; a GUID or job id names its jobs itself")
    selector = base.ReplaySelector(
        guid=args.guid, job_id=args.job, all_dead=args.all_dead, event=args.event
    )
    replayed = _run_with_store(
        config, lambda store: store.replay(selector, timeutil.utcnow(), "cli:replay")
    )
    if args.json:
        _print_json(
            {
                "replayed": [
                    {"job_id": r.job_id, "previous_status": r.previous_status} for r in replayed
                ]
            }
        )
    elif replayed:
        for r in replayed:
            print(f"job {r.job_id}: {r.previous_status} -> pending")
        print(f"{len(replayed)} job(s) queued again; a running worker picks them up at once")
    else:
        print("nothing to replay")
    return EXIT_OK


def cmd_deliver(args: argparse.Namespace, config: settings.Settings) -> int:
    secret = config.require_webhook_secrets()[0]
    try:
        body = Path(args.file).read_bytes()
    except OSError as exc:
        return _usage(f"cannot read {args.file}: {exc.strerror or exc}")
    content_type = webhook.JSON
    if args.form:
        # As a hook with content type application/x-www-form-urlencoded: the
        # JSON goes in payload=, and the signature covers the form body.
        try:
            body = urllib.parse.urlencode({"payload": body.decode("utf-8")}).encode("ascii")
        except UnicodeDecodeError:
            return _usage(f"{args.file} is not UTF-8 text")
        content_type = webhook.FORM
    guid = args.delivery or str(uuid.uuid4())
    headers = {
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/forgea-gh-deliver",
        "X-GitHub-Event": args.event,
        "X-GitHub-Delivery": guid,
        "X-Hub-Signature-256": webhook.sign(body, secret),
    }
    if args.hook_id is not None:
        headers["X-GitHub-Hook-ID"] = str(args.hook_id)
    url = args.url or config.receiver_url()
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"forgea-gh: cannot deliver to {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(
            {
                "url": url,
                "guid": guid,
                "status_code": response.status_code,
                "response": _maybe_json(response),
            }
        )
    else:
        print(f"{response.status_code} {response.text.strip()}")
    return EXIT_OK if response.is_success else EXIT_FAILED


def cmd_smee(args: argparse.Namespace, config: settings.Settings) -> int:
    from forgea_gh import smee

    source = args.url or config.smee.url
    if not source:
        return _usage(
            "no channel: give its URL (forgea-gh smee https://smee.io/...) or set smee.url"
        )
    target = args.target or config.smee_target()
    for name, url in (("channel", source), ("--target", target)):
        if not url.startswith(("https://", "http://")):
            return _usage(f"{name} {url!r} is not an http(s) URL")
    print(
        f"forgea-gh: forwarding {source} to {target} (Ctrl-C stops). The receiver needs "
        "webhook.accept_reserialized = true for bodies smee.io re-encoded.",
        file=sys.stderr,
    )

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await smee.Forwarder(source, target).run()

    asyncio.run(run())
    return EXIT_OK


def cmd_redeliver(args: argparse.Namespace, config: settings.Settings) -> int:
    from forgea_gh.github import client as github_client
    from forgea_gh.github import redelivery

    hooks = redelivery.hooks_from(config.redelivery.hooks, config.redelivery.app)
    if not hooks:
        raise errors.ConfigError(
            "redelivery.hooks: no hook to reconcile (set redelivery.hooks or redelivery.app)"
        )
    github = github_client.from_settings(config)
    if github is None:
        raise errors.ConfigError(
            "github.token: redelivery needs GitHub credentials (github.token, or "
            "github.app_id and github.private_key_file)"
        )
    client = github
    since = timeutil.utcnow() - args.since

    async def run(store: base.Store) -> redelivery.Report:
        try:
            return await redelivery.reconcile(
                client, store, hooks, since=since, dry_run=args.dry_run
            )
        finally:
            await client.aclose()

    report = _run_with_store(config, run)
    if args.json:
        _print_json(report.to_json() | {"dry_run": args.dry_run})
    else:
        verb = "would ask" if args.dry_run else "asked"
        print(
            f"{report.listed} deliveries listed, {report.failed} failed GUIDs: "
            f"{report.stored} stored here, {report.asked_before} asked for before; "
            f"{verb} GitHub to redeliver {len(report.requested)}"
        )
        for guid in report.requested:
            print(f"  {guid}")
        for problem in report.errors:
            print(f"error: {problem}", file=sys.stderr)
    return EXIT_OK if not report.errors else EXIT_FAILED


def _duration(text: str) -> timedelta:
    """`24h`, `90m`, `3d` or seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return timedelta(seconds=value * units[unit])


def cmd_prune(args: argparse.Namespace, config: settings.Settings) -> int:
    from forgea_gh import scheduler

    result = _run_with_store(
        config, lambda store: scheduler.prune_completed(store, timedelta(days=args.older_than))
    )
    if args.json:
        _print_json({"jobs": result.jobs, "deliveries": result.deliveries})
    else:
        print(f"pruned {result.jobs} completed job(s) and {result.deliveries} deliveries")
    return EXIT_OK


def cmd_labs_add(args: argparse.Namespace, config: settings.Settings) -> int:
    if args.ref is not None and args.version is None:
        return _usage("--ref needs --version")

    async def work(tx: base.LabTx) -> tuple[model.Lab, model.LabVersion | None]:
        lab = await service.create_lab(tx, args.slug, args.title, args.template, actor=ACTOR)
        if args.version is None:
            return lab, None
        _, version = await service.add_version(
            tx, lab.slug, args.version, args.ref or "main", actor=ACTOR
        )
        return lab, version

    lab, version = _run_with_store(config, lambda store: store.transaction(work))
    if args.json:
        _print_json(
            {"lab": lab.to_json(), "version": version.to_json(lab.slug) if version else None}
        )
        return EXIT_OK
    print(f"lab {lab.slug} (id {lab.id}): {lab.title}, template {lab.template_repository}")
    if version is not None:
        print(f"version {version.version} (template ref {version.template_ref})")
    return EXIT_OK


def cmd_labs_versions_add(args: argparse.Namespace, config: settings.Settings) -> int:
    async def work(tx: base.LabTx) -> tuple[model.Lab, model.LabVersion]:
        return await service.add_version(tx, args.slug, args.version, args.ref, actor=ACTOR)

    lab, version = _run_with_store(config, lambda store: store.transaction(work))
    if args.json:
        _print_json(version.to_json(lab.slug))
    else:
        print(f"lab {lab.slug}: version {version.version} (template ref {version.template_ref})")
    return EXIT_OK


def cmd_sessions_create(args: argparse.Namespace, config: settings.Settings) -> int:
    if (args.repo_id is None) != (args.repo_url is None):
        return _usage("--repo-id and --repo-url go together: give both or neither")
    if args.repo_name is not None and args.repo_id is None:
        return _usage("--repo-name needs --repo-id and --repo-url")
    repository = None
    if args.repo_id is not None:
        repository = ledger.repository_at(args.repo_id, args.repo_url, args.repo_name)
    request = service.NewSession(
        lab=args.lab,
        login=args.user,
        version=args.version,
        github_id=args.github_id,
        repository=repository,
    )

    async def work(tx: base.LabTx) -> model.Session:
        return await service.start_session(
            tx,
            request,
            actor=ACTOR,
            max_attempts=config.worker.max_attempts,
            can_provision=config.github_configured(),
        )

    session = _run_with_store(config, lambda store: store.transaction(work))
    if args.json:
        _print_json(session.to_json())
        return EXIT_OK
    _print_session(session)
    if session.status is lifecycle.Status.PROVISIONING:
        print(f"a {service.PROVISION_REPO} job is queued for it")
    return EXIT_OK


def cmd_sessions_show(args: argparse.Namespace, config: settings.Settings) -> int:
    session = _run_with_store(
        config, lambda store: store.read(lambda tx: service.require_session(tx, args.session_id))
    )
    if args.json:
        _print_json(session.to_json())
    else:
        _print_session(session)
    return EXIT_OK


def cmd_sessions_list(args: argparse.Namespace, config: settings.Settings) -> int:
    filters = base.SessionFilter(status=args.status, lab=args.lab, user=args.user)
    rows = _run_with_store(
        config,
        lambda store: store.read(lambda tx: tx.sessions(filters, args.cursor, args.limit + 1)),
    )
    items = rows[: args.limit]
    next_cursor = str(items[-1].id) if len(rows) > args.limit else None
    if args.json:
        _print_json({"items": [s.to_json() for s in items], "next_cursor": next_cursor})
        return EXIT_OK
    if not items:
        print("no sessions")
    for s in items:
        repo = s.repository.full_name if s.repository else "-"
        print(
            f"{s.id:>8}  {s.status:<19} {s.lab_slug + '@' + s.lab_version:<24} "
            f"{s.user_login:<20} {repo:<30} {s.last_activity_at}"
        )
    if next_cursor:
        print(f"more: --cursor {next_cursor}")
    return EXIT_OK


# -- plumbing ----------------------------------------------------------------


def _run_with_store(config: settings.Settings, work: Callable[[base.Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = store_mod.from_settings(config)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _usage(message: str) -> int:
    print(f"forgea-gh: {message}", file=sys.stderr)
    return EXIT_USAGE


def _print_session(session: model.Session) -> None:
    user = session.user_login
    if session.user_github_id is not None:
        user += f" (github id {session.user_github_id})"
    repo = "-"
    if session.repository is not None:
        r = session.repository
        repo = f"{r.full_name} (id {r.provider_repo_id}) {r.html_url}"
    print(f"session {session.id}: {session.status}")
    for label, value in (
        ("lab", f"{session.lab_slug} {session.lab_version}"),
        ("user", user),
        ("repository", repo),
        ("started at", session.started_at),
        ("last activity", session.last_activity_at),
        ("completed at", session.completed_at or "-"),
    ):
        print(f"  {label + ':':<15}{value}")


def _print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _maybe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _or_none(value: float | None, fmt: str) -> str:
    return "none" if value is None else fmt.format(value)


def _positive_days(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_PAGE}")
    return value


def _parser() -> argparse.ArgumentParser:
    config_help = f"TOML config file (default: ${settings.CONFIG_ENV_VAR})"
    # --config goes before or after the command. After it, its default must
    # not be None: argparse would write that over a --config given before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(
        prog="forgea-gh", description="GitHub webhook daemon for Forgea labs."
    )
    parser.add_argument("--config", metavar="PATH", help=config_help)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument(
        "--role",
        choices=[r.value for r in app_mod.Role],
        default="all",
        help="receiver: store deliveries only; worker: process only; all: both",
    )
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.set_defaults(command=cmd_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        metavar="ACTION", required=True
    )
    db.add_parser("init", parents=[common], help="create or migrate the schema").set_defaults(
        command=cmd_db_init
    )
    check = db.add_parser(
        "check", parents=[common, as_json], help="check schema version and integrity"
    )
    check.set_defaults(command=cmd_db_check)

    commands.add_parser(
        "status", parents=[common, as_json], help="job counts and queue age"
    ).set_defaults(command=cmd_status)

    dead = commands.add_parser("dead-letters", help="inspect dead-lettered jobs").add_subparsers(
        metavar="ACTION", required=True
    )
    listing = dead.add_parser("list", parents=[common, as_json], help="list dead letters")
    for name in ("kind", "event", "action", "guid", "cursor"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--limit", type=_page_size, default=50)
    listing.set_defaults(command=cmd_dead_letters_list)
    show = dead.add_parser("show", parents=[common, as_json], help="one dead letter")
    show.add_argument("job_id", type=int)
    show.add_argument("--payload", action="store_true", help="include the payload")
    show.set_defaults(command=cmd_dead_letters_show)

    replay = commands.add_parser(
        "replay", parents=[common, as_json], help="queue failed or dead-lettered jobs again"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--guid", help="every job of the delivery with this GUID")
    which.add_argument("--job", type=int, help="one job by id")
    which.add_argument("--all-dead", action="store_true", help="every dead letter")
    replay.add_argument("--event", help="with --all-dead: only deliveries of this event")
    replay.set_defaults(command=cmd_replay)

    deliver = commands.add_parser(
        "deliver", parents=[common, as_json], help="sign a payload file and POST it as GitHub would"
    )
    deliver.add_argument("file")
    deliver.add_argument("--event", required=True, help="X-GitHub-Event, e.g. push")
    deliver.add_argument("--delivery", help="X-GitHub-Delivery GUID (default: a fresh one)")
    deliver.add_argument("--hook-id", type=int, help="X-GitHub-Hook-ID")
    deliver.add_argument(
        "--form",
        action="store_true",
        help="send it form-encoded (payload=JSON), as a hook with that content type does",
    )
    deliver.add_argument(
        "--url",
        help="POST to this URL (default: http://server.host:server.port/webhooks/github)",
    )
    deliver.set_defaults(command=cmd_deliver)

    smee_cmd = commands.add_parser(
        "smee",
        parents=[common],
        help="forward a smee.io channel to a receiver (runs until stopped)",
    )
    smee_cmd.add_argument(
        "url", nargs="?", help="the channel, e.g. https://smee.io/AbCdEf (default: smee.url)"
    )
    smee_cmd.add_argument(
        "--target",
        metavar="URL",
        help="where to POST deliveries (default: smee.target, else this config's receiver)",
    )
    smee_cmd.set_defaults(command=cmd_smee)

    redeliver = commands.add_parser(
        "redeliver",
        parents=[common, as_json],
        help="ask GitHub to redeliver failed deliveries that are not stored here",
    )
    redeliver.add_argument(
        "--since",
        type=_duration,
        default=timedelta(days=3),
        metavar="DURATION",
        help="how far back to look (e.g. 24h; GitHub keeps 3 days)",
    )
    redeliver.add_argument("--dry-run", action="store_true", help="list, ask for nothing")
    redeliver.set_defaults(command=cmd_redeliver)

    prune = commands.add_parser(
        "prune", parents=[common, as_json], help="delete old completed jobs and their deliveries"
    )
    prune.add_argument("--older-than", type=_positive_days, required=True, metavar="DAYS")
    prune.set_defaults(command=cmd_prune)

    labs = commands.add_parser("labs", help="labs and their versions").add_subparsers(
        metavar="ACTION", required=True
    )
    lab_add = labs.add_parser(
        "add", parents=[common, as_json], help="add a lab (and, with --version, its first version)"
    )
    lab_add.add_argument("slug")
    lab_add.add_argument("--title", required=True)
    lab_add.add_argument("--template", required=True, metavar="OWNER/NAME")
    lab_add.add_argument("--version", help="also add this first version")
    lab_add.add_argument("--ref", help="with --version: the template's git ref (default: main)")
    lab_add.set_defaults(command=cmd_labs_add)
    versions = labs.add_parser("versions", help="lab versions").add_subparsers(
        metavar="ACTION", required=True
    )
    version_add = versions.add_parser(
        "add", parents=[common, as_json], help="add a version to a lab"
    )
    version_add.add_argument("slug")
    version_add.add_argument("version")
    version_add.add_argument("--ref", default="main", help="the template's git ref")
    version_add.set_defaults(command=cmd_labs_versions_add)

    sessions = commands.add_parser("sessions", help="lab sessions").add_subparsers(
        metavar="ACTION", required=True
    )
    create = sessions.add_parser(
        "create",
        parents=[common, as_json],
        help="start a session: bound to an existing repository, or one to provision",
    )
    create.add_argument("--lab", required=True, metavar="SLUG")
    create.add_argument("--user", required=True, metavar="LOGIN")
    create.add_argument("--github-id", type=int, help="the user's GitHub id")
    create.add_argument("--version", help="the lab version (default: the latest)")
    create.add_argument(
        "--repo-id", type=int, help="bind this GitHub repository id (no GitHub call)"
    )
    create.add_argument("--repo-url", metavar="URL", help="with --repo-id: its html_url")
    create.add_argument(
        "--repo-name",
        metavar="OWNER/NAME",
        help="with --repo-id: its full name (default: from URL)",
    )
    create.set_defaults(command=cmd_sessions_create)
    session_show = sessions.add_parser("show", parents=[common, as_json], help="one session")
    session_show.add_argument("session_id", type=int, metavar="ID")
    session_show.set_defaults(command=cmd_sessions_show)
    session_list = sessions.add_parser(
        "list", parents=[common, as_json], help="sessions, newest first"
    )
    session_list.add_argument(
        "--status", type=str.upper, choices=[s.value for s in lifecycle.Status]
    )
    session_list.add_argument("--lab", metavar="SLUG")
    session_list.add_argument("--user", metavar="LOGIN")
    session_list.add_argument("--limit", type=_page_size, default=50)
    session_list.add_argument("--cursor", type=int, help="a next cursor printed by a list")
    session_list.set_defaults(command=cmd_sessions_list)
    return parser
