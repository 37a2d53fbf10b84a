"""The lab domain's `LabTx` on an open SQLite transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import orjson

from forgea_gh import errors
from forgea_gh.labs import lifecycle, model
from forgea_gh.store import base, queries

Q = queries.load("labs_sqlite.sql")
_SESSIONS = Q["session_columns"]


class SqliteLabTx:
    def __init__(self, db: aiosqlite.Connection, now: str) -> None:
        self.db = db
        self.now = now

    async def _one(self, sql: str, params: dict[str, Any]) -> sqlite3.Row | None:
        rows = list(await self.db.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def audit(
        self,
        action: str,
        *,
        actor: str,
        subject: tuple[str, int | str] | None = None,
        guid: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO audit_log (occurred_at, actor, action, subject_type, subject_id,"
            " delivery_guid, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.now,
                actor,
                action,
                subject[0] if subject else None,
                str(subject[1]) if subject else None,
                guid,
                orjson.dumps(detail or {}).decode(),
            ),
        )

    async def enqueue_job(
        self, kind: str, idempotency_key: str, payload: dict[str, Any], max_attempts: int
    ) -> int | None:
        row = await self._one(
            Q["insert_job"],
            {
                "kind": kind,
                "payload": orjson.dumps(payload).decode(),
                "key": idempotency_key,
                "max_attempts": max_attempts,
                "now": self.now,
            },
        )
        return int(row["id"]) if row else None

    async def user(self, login: str, github_id: int | None) -> tuple[int, str, int | None]:
        row = await self._one(
            Q["upsert_user"], {"login": login, "github_id": github_id, "now": self.now}
        )
        assert row is not None
        return row["id"], row["login"], row["github_id"]

    async def lab(self, slug: str) -> model.Lab | None:
        row = await self._one(Q["lab_by_slug"], {"slug": slug})
        return model.Lab(**dict(row)) if row else None

    async def create_lab(self, slug: str, title: str, template_repository: str) -> model.Lab:
        row = await self._one(
            Q["insert_lab"],
            {
                "slug": slug,
                "title": title,
                "template_repository": template_repository,
                "now": self.now,
            },
        )
        assert row is not None
        return model.Lab(**dict(row))

    async def lab_version(self, lab_id: int, version: str | None) -> model.LabVersion | None:
        if version is None:
            row = await self._one(Q["latest_lab_version"], {"lab_id": lab_id})
        else:
            row = await self._one(Q["lab_version"], {"lab_id": lab_id, "version": version})
        return model.LabVersion(**dict(row)) if row else None

    async def create_lab_version(
        self, lab_id: int, version: str, template_ref: str
    ) -> model.LabVersion:
        row = await self._one(
            Q["insert_lab_version"],
            {"lab_id": lab_id, "version": version, "template_ref": template_ref, "now": self.now},
        )
        assert row is not None
        return model.LabVersion(**dict(row))

    async def create_session(
        self,
        user_id: int,
        lab_version: model.LabVersion,
        status: lifecycle.Status,
        user_fork_url: str | None,
    ) -> model.Session:
        row = await self._one(
            Q["insert_session"],
            {
                "user_id": user_id,
                "lab_id": lab_version.lab_id,
                "lab_version_id": lab_version.id,
                "status": status.value,
                "user_fork_url": user_fork_url,
                "now": self.now,
            },
        )
        assert row is not None
        created = await self.session(row["id"])
        assert created is not None
        return created

    async def _sessions(self, where: str, params: dict[str, Any]) -> list[model.Session]:
        rows = await self.db.execute_fetchall(f"{_SESSIONS} {where}", params)
        return [_session(r) for r in rows]

    async def session(self, session_id: int) -> model.Session | None:
        found = await self._sessions("WHERE s.id = :id", {"id": session_id})
        return found[0] if found else None

    async def session_by_repository(self, provider_repo_id: int) -> model.Session | None:
        found = await self._sessions("WHERE m.provider_repo_id = :repo", {"repo": provider_repo_id})
        return found[0] if found else None

    async def unbound_session_by_fork_url(self, normalised_url: str) -> model.Session | None:
        found = await self._sessions(
            "WHERE s.user_fork_url = :url AND m.id IS NULL ORDER BY s.id DESC LIMIT 1",
            {"url": normalised_url},
        )
        return found[0] if found else None

    async def sessions(
        self, filters: base.SessionFilter, cursor: int | None, limit: int
    ) -> list[model.Session]:
        return await self._sessions(
            "WHERE (:status IS NULL OR s.status = :status) AND (:lab IS NULL OR l.slug = :lab)"
            " AND (:user IS NULL OR u.login = :user COLLATE NOCASE)"
            " AND (:before IS NULL OR s.id < :before) ORDER BY s.id DESC LIMIT :limit",
            {
                "status": filters.status,
                "lab": filters.lab,
                "user": filters.user,
                "before": cursor,
                "limit": limit,
            },
        )

    async def idle_sessions(self, statuses: list[str], idle_since: str) -> list[model.Session]:
        return await self._sessions(
            "WHERE s.status IN (SELECT value FROM json_each(:statuses))"
            " AND s.last_activity_at < :since ORDER BY s.id",
            {"statuses": orjson.dumps(statuses).decode(), "since": idle_since},
        )

    async def bind_repository(self, session_id: int, repository: model.Repository) -> None:
        await self.db.execute(
            Q["insert_mapping"],
            {
                "provider_repo_id": repository.provider_repo_id,
                "full_name": repository.full_name,
                "html_url": repository.html_url,
                "installation_id": repository.installation_id,
                "session_id": session_id,
                "now": self.now,
            },
        )

    async def rename_repository(self, repository: model.Repository) -> bool:
        cursor = await self.db.execute(
            Q["rename_mapping"],
            {
                "provider_repo_id": repository.provider_repo_id,
                "full_name": repository.full_name,
                "html_url": repository.html_url,
                "installation_id": repository.installation_id,
                "now": self.now,
            },
        )
        return cursor.rowcount == 1

    async def set_status(self, session: model.Session, status: lifecycle.Status) -> model.Session:
        cursor = await self.db.execute(
            Q["set_status"],
            {"status": status.value, "now": self.now, "id": session.id, "version": session.version},
        )
        if cursor.rowcount != 1:
            raise errors.ConflictError(
                f"session {session.id} changed since it was read (row version "
                f"{session.version} is stale); read it again and retry"
            )
        updated = await self.session(session.id)
        assert updated is not None
        return updated

    async def touch(self, session: model.Session) -> model.Session:
        return await self.set_status(session, session.status)

    async def record_commits(self, session_id: int, push: model.Push, delivery_guid: str) -> int:
        before = self.db.total_changes
        await self.db.executemany(
            Q["insert_attempt"],
            [
                {
                    "session_id": session_id,
                    "sha": c.sha,
                    "ref": push.ref,
                    "branch": push.branch,
                    "author_name": c.author_name,
                    "author_email": c.author_email,
                    "author_login": c.author_login,
                    "committer_name": c.committer_name,
                    "committer_email": c.committer_email,
                    "committer_login": c.committer_login,
                    "message": c.message,
                    "added": orjson.dumps(c.added).decode(),
                    "modified": orjson.dumps(c.modified).decode(),
                    "removed": orjson.dumps(c.removed).decode(),
                    "timestamp": c.timestamp,
                    "pushed_at": push.pushed_at,
                    "guid": delivery_guid,
                    "forced": int(push.forced),
                    "now": self.now,
                }
                for c in push.commits
            ],
        )
        return self.db.total_changes - before

    async def attempt_id(self, session_id: int, commit_sha: str) -> int | None:
        row = await self._one(Q["attempt_id"], {"session_id": session_id, "sha": commit_sha})
        return int(row["id"]) if row else None

    async def attempts(
        self, session_id: int, cursor: int | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self.db.execute_fetchall(
            Q["attempts_page"], {"session_id": session_id, "after": cursor, "limit": limit}
        )
        return [_attempt(r) for r in rows]

    async def add_verification(
        self,
        session_id: int,
        outcome: str,
        commit_sha: str | None,
        summary: str | None,
        details_url: str | None,
        idempotency_key: str,
    ) -> model.Verification | None:
        row = await self._one(
            Q["insert_verification"],
            {
                "session_id": session_id,
                "outcome": outcome,
                "sha": commit_sha,
                "summary": summary,
                "details_url": details_url,
                "key": idempotency_key,
                "now": self.now,
            },
        )
        if row is None:
            return None
        return model.Verification(
            id=row["id"],
            lab_session_id=row["lab_session_id"],
            outcome=row["outcome"],
            commit_sha=row["commit_sha"],
            lab_attempt_id=row["lab_attempt_id"],
            summary=row["summary"],
            details_url=row["details_url"],
            created_at=row["created_at"],
        )

    async def stored_guids(self, guids: list[str]) -> set[str]:
        rows = await self.db.execute_fetchall(
            Q["stored_guids"], {"guids": orjson.dumps(guids).decode()}
        )
        return {r["guid"] for r in rows}

    async def redeliveries_asked(self, hook: str, guids: list[str]) -> set[str]:
        rows = await self.db.execute_fetchall(
            Q["redeliveries_asked"], {"hook": hook, "guids": orjson.dumps(guids).decode()}
        )
        return {r["guid"] for r in rows}

    async def record_redelivery(
        self,
        hook: str,
        guid: str,
        github_delivery_id: int,
        event: str | None,
        action: str | None,
        outcome: str,
    ) -> None:
        await self.db.execute(
            Q["insert_redelivery"],
            {
                "hook": hook,
                "guid": guid,
                "delivery_id": github_delivery_id,
                "event": event,
                "action": action,
                "outcome": outcome,
                "now": self.now,
            },
        )

    async def redelivery_counts(self) -> dict[str, Any]:
        row = await self._one(Q["redelivery_counts"], {})
        assert row is not None
        return {
            "requested": row["requested"] or 0,
            "failed": row["failed"] or 0,
            "last_requested_at": row["last"],
        }

    async def stored_response(self, scope: str, key: str) -> base.StoredResponse | None:
        row = await self._one(Q["stored_response"], {"scope": scope, "key": key})
        if row is None:
            return None
        return base.StoredResponse(
            row["request_hash"], row["status_code"], orjson.loads(row["response"])
        )

    async def store_response(
        self, scope: str, key: str, request_hash: str, status_code: int, body: dict[str, Any]
    ) -> None:
        await self.db.execute(
            Q["store_response"],
            {
                "scope": scope,
                "key": key,
                "request_hash": request_hash,
                "status_code": status_code,
                "response": orjson.dumps(body).decode(),
                "now": self.now,
            },
        )


def _session(row: sqlite3.Row) -> model.Session:
    repository = None
    if row["provider_repo_id"] is not None:
        repository = model.Repository(
            row["provider_repo_id"], row["full_name"], row["html_url"], row["installation_id"]
        )
    return model.Session(
        id=row["id"],
        status=lifecycle.Status(row["status"]),
        version=row["version"],
        user_id=row["user_id"],
        user_login=row["user_login"],
        user_github_id=row["user_github_id"],
        lab_id=row["lab_id"],
        lab_slug=row["lab_slug"],
        lab_version_id=row["lab_version_id"],
        lab_version=row["lab_version"],
        user_fork_url=row["user_fork_url"],
        preview_url=row["preview_url"],
        started_at=row["started_at"],
        last_activity_at=row["last_activity_at"],
        completed_at=row["completed_at"],
        repository=repository,
    )


def _attempt(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "commit_sha": row["commit_sha"],
        "ref": row["ref"],
        "branch": row["branch"],
        "author": {
            "name": row["author_name"],
            "email": row["author_email"],
            "login": row["author_login"],
        },
        "committer": {
            "name": row["committer_name"],
            "email": row["committer_email"],
            "login": row["committer_login"],
        },
        "message": row["message"],
        "changed_files": {
            "added": orjson.loads(row["added"]),
            "modified": orjson.loads(row["modified"]),
            "removed": orjson.loads(row["removed"]),
        },
        "commit_timestamp": row["commit_timestamp"],
        "pushed_at": row["pushed_at"],
        "delivery_guid": row["delivery_guid"],
        "forced": bool(row["forced"]),
        "recorded_at": row["recorded_at"],
    }
