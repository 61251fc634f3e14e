"""Versioned keys and secrets in PostgreSQL (the KeyStore port), shared by every replica.

The semantics are those of ``SQLiteKeyStore``: versions 1..n, one current; a version is
released only while ``active`` and at or above ``min_release_version``; rotation is a
compare-and-set on the current version (and the last rotation time), so replicas racing
to rotate one resource land exactly one new version.

Erasure: ``destroy_version`` and ``delete`` overwrite ``sealed`` with NULL. PostgreSQL's
MVCC keeps the previous row version (with the old bytes) on its page until VACUUM prunes
it, and WAL segments and base backups keep copies for as long as they are retained; the
store therefore runs a plain ``VACUUM`` of ``resource_versions`` right after an erasure
(cheap at the size of a key table; a best effort, since a long-running transaction
elsewhere can keep the dead row visible, and pruning does not scrub page free space).
What is stored is sealed under the KEK, so the erasure that does not depend on the
database is the KEK's: rotate the root key (``reseal_all``) and retire the old one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import structlog

from broker.adapters.pg_db import PostgresDB
from broker.errors import (
    BackendError,
    Conflict,
    KeyVersionDestroyed,
    MalformedRequest,
    ResourceNotFound,
)
from broker.ports import (
    ACTIVE,
    DESTROYED,
    RETIRED,
    ResourceInfo,
    StoredValue,
    VersionInfo,
    releasable_version,
)

log = structlog.get_logger(__name__)

_READ = "key store read"
_WRITE = "key store write"


def _utc(now: datetime) -> datetime:
    return now.astimezone(UTC)


def _info(row: asyncpg.Record) -> ResourceInfo:
    return ResourceInfo(
        id=row["id"],
        kind=row["kind"],
        current_version=row["current_version"],
        min_release_version=row["min_release_version"],
        rotate_every=row["rotate_every"],
        last_rotated_at=row["last_rotated_at"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        size=row["size"],
        source=row["source"],
    )


class PostgresKeyStore:
    def __init__(self, db: PostgresDB) -> None:
        self._db = db

    async def create(
        self,
        resource: str,
        *,
        kind: str,
        sealed: bytes,
        size: int,
        actor: str,
        now: datetime,
        rotate_every: int | None = None,
        source: str = "",
    ) -> ResourceInfo:
        stamp = _utc(now)
        async with self._db.transaction(_WRITE) as conn:
            row = await conn.fetchrow(
                "INSERT INTO resources AS r (id, kind, current_version, rotate_every,"
                " last_rotated_at, created_at, created_by, size, source)"
                " VALUES ($1, $2, 1, $3, $4, $4, $5, $6, $7)"
                " ON CONFLICT (id) DO NOTHING RETURNING *",
                resource,
                kind,
                rotate_every,
                stamp,
                actor,
                size,
                source,
            )
            if row is None:
                raise Conflict(f"resource {resource} already exists")
            await conn.execute(
                "INSERT INTO resource_versions"
                " (resource, version, sealed, size, created_at, created_by)"
                " VALUES ($1, 1, $2, $3, $4, $5)",
                resource,
                sealed,
                size,
                stamp,
                actor,
            )
        return _info(row)

    async def info(self, resource: str) -> ResourceInfo:
        async with self._db.connection(_READ) as conn:
            row = await conn.fetchrow("SELECT * FROM resources WHERE id = $1", resource)
        if row is None:
            raise ResourceNotFound(f"no resource {resource}")
        return _info(row)

    async def get_version(self, resource: str, version: int | None) -> StoredValue:
        # One round trip on the release path: the resource and the wanted version together.
        async with self._db.connection(_READ) as conn:
            row = await conn.fetchrow(
                "SELECT r.*, v.version AS v_version, v.state AS v_state,"
                " v.sealed AS v_sealed"
                " FROM resources r LEFT JOIN resource_versions v"
                " ON v.resource = r.id AND v.version = COALESCE($2, r.current_version)"
                " WHERE r.id = $1",
                resource,
                version,
            )
        if row is None:
            raise ResourceNotFound(f"no resource {resource}")
        info = _info(row)
        state = None if row["v_version"] is None else row["v_state"]
        return releasable_version(info, version, state, row["v_sealed"])

    async def add_version(
        self,
        resource: str,
        *,
        version: int,
        sealed: bytes,
        size: int,
        actor: str,
        now: datetime,
        expected_rotated_at: datetime | None = None,
    ) -> ResourceInfo:
        stamp = _utc(now)
        expected = None if expected_rotated_at is None else _utc(expected_rotated_at)
        async with self._db.transaction(_WRITE) as conn:
            # Compare-and-set: a racing replica's UPDATE waits for our row lock, then
            # re-checks the WHERE clause against the committed row, matches nothing,
            # and gets Conflict; so exactly one rotation lands.
            row = await conn.fetchrow(
                "UPDATE resources AS r SET current_version = $2, last_rotated_at = $3, size = $4"
                " WHERE r.id = $1 AND r.current_version = $2 - 1"
                " AND ($5::timestamptz IS NULL OR r.last_rotated_at = $5)"
                " RETURNING r.*",
                resource,
                version,
                stamp,
                size,
                expected,
            )
            if row is None:
                raise Conflict(f"resource {resource} changed concurrently; not rotated")
            await conn.execute(
                "INSERT INTO resource_versions"
                " (resource, version, sealed, size, created_at, created_by)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                resource,
                version,
                sealed,
                size,
                stamp,
                actor,
            )
        return _info(row)

    async def versions(self, resource: str) -> Sequence[VersionInfo]:
        async with self._db.transaction(_READ, isolation="repeatable_read") as conn:
            exists = await conn.fetchval("SELECT 1 FROM resources WHERE id = $1", resource)
            rows = await conn.fetch(
                "SELECT version, state, created_at, created_by FROM resource_versions"
                " WHERE resource = $1 ORDER BY version",
                resource,
            )
        if exists is None:
            raise ResourceNotFound(f"no resource {resource}")
        return [
            VersionInfo(r["version"], r["state"], r["created_at"], r["created_by"]) for r in rows
        ]

    async def list(self) -> Sequence[ResourceInfo]:
        async with self._db.connection(_READ) as conn:
            rows = await conn.fetch("SELECT * FROM resources ORDER BY id")
        return [_info(r) for r in rows]

    async def update_settings(
        self,
        resource: str,
        *,
        min_release_version: int | None = None,
        rotate_every: int | None = None,
        clear_rotate_every: bool = False,
    ) -> ResourceInfo:
        async with self._db.transaction(_WRITE) as conn:
            # The row lock keeps a rotation from moving current_version under the check.
            row = await conn.fetchrow("SELECT * FROM resources WHERE id = $1 FOR UPDATE", resource)
            if row is None:
                raise ResourceNotFound(f"no resource {resource}")
            info = _info(row)
            if min_release_version is not None and not (
                1 <= min_release_version <= info.current_version
            ):
                raise MalformedRequest(
                    f"min_release_version must be between 1 and the current version"
                    f" {info.current_version}"
                )
            new_min = (
                info.min_release_version if min_release_version is None else min_release_version
            )
            new_every = None if clear_rotate_every else (rotate_every or info.rotate_every)
            row = await conn.fetchrow(
                "UPDATE resources AS r SET min_release_version = $2, rotate_every = $3"
                " WHERE r.id = $1 RETURNING r.*",
                resource,
                new_min,
                new_every,
            )
        assert row is not None  # locked above
        return _info(row)

    async def set_version_state(self, resource: str, version: int, state: str) -> None:
        if state not in (ACTIVE, RETIRED):
            raise MalformedRequest("a version can only be set active or retired")
        async with self._db.transaction(_WRITE) as conn:
            current = await conn.fetchval(
                "SELECT state FROM resource_versions WHERE resource = $1 AND version = $2"
                " FOR UPDATE",
                resource,
                version,
            )
            if current is None:
                raise ResourceNotFound(f"resource {resource} has no version {version}")
            if current == DESTROYED:
                raise KeyVersionDestroyed(f"version {version} of {resource} was destroyed")
            await conn.execute(
                "UPDATE resource_versions SET state = $3 WHERE resource = $1 AND version = $2",
                resource,
                version,
                state,
            )

    async def destroy_version(self, resource: str, version: int) -> None:
        async with self._db.transaction(_WRITE) as conn:
            current = await conn.fetchval(
                "SELECT current_version FROM resources WHERE id = $1 FOR UPDATE", resource
            )
            if current is None:
                raise ResourceNotFound(f"no resource {resource}")
            if version == current:
                raise Conflict("the current version cannot be destroyed; rotate first")
            status = await conn.execute(
                "UPDATE resource_versions SET state = $3, sealed = NULL"
                " WHERE resource = $1 AND version = $2",
                resource,
                version,
                DESTROYED,
            )
            if _count(status) != 1:
                raise ResourceNotFound(f"resource {resource} has no version {version}")
        await self._prune_erased()

    async def due(self, now: datetime) -> Sequence[ResourceInfo]:
        async with self._db.connection(_READ) as conn:
            rows = await conn.fetch(
                "SELECT r.* FROM resources r"
                " WHERE r.rotate_every IS NOT NULL AND r.kind = 'data-key'"
                " AND r.last_rotated_at + r.rotate_every * interval '1 second' <= $1"
                " ORDER BY r.id",
                _utc(now),
            )
        return [_info(r) for r in rows]

    async def delete(self, resource: str) -> None:
        async with self._db.transaction(_WRITE) as conn:
            # Erase material first, like the SQLite store; the cascade then drops the rows.
            await conn.execute(
                "UPDATE resource_versions SET sealed = NULL WHERE resource = $1", resource
            )
            status = await conn.execute("DELETE FROM resources WHERE id = $1", resource)
            if _count(status) == 0:
                raise ResourceNotFound(f"no resource {resource}")
        await self._prune_erased()

    async def all_sealed(self) -> Sequence[tuple[str, int, bytes]]:
        async with self._db.connection(_READ) as conn:
            rows = await conn.fetch(
                "SELECT resource, version, sealed FROM resource_versions"
                " WHERE sealed IS NOT NULL AND length(sealed) > 0"
                " ORDER BY resource, version"
            )
        return [(r["resource"], r["version"], bytes(r["sealed"])) for r in rows]

    async def check_writable(self) -> None:
        await self._db.check_writable()

    async def reseal_all(self, reseal: Callable[[str, int, bytes], Awaitable[bytes]]) -> int:
        """Re-seals every stored value in ONE transaction (no writer can slip in).

        The table lock blocks every other replica's inserts and updates of stored values
        until COMMIT, while releases (plain reads) go on; a value created mid-rotation
        therefore waits and is sealed afterwards, never missed. ``reseal`` runs with the
        lock held; plaintext never leaves memory. ``vault-kv`` values (empty) are skipped.
        """
        async with self._db.transaction(_WRITE) as conn:
            await conn.execute("LOCK TABLE resource_versions IN SHARE ROW EXCLUSIVE MODE")
            rows = await conn.fetch(
                "SELECT resource, version, sealed FROM resource_versions"
                " WHERE sealed IS NOT NULL AND length(sealed) > 0 ORDER BY resource, version"
            )
            updates = [
                (
                    r["resource"],
                    r["version"],
                    await reseal(r["resource"], r["version"], r["sealed"]),
                )
                for r in rows
            ]
            await conn.executemany(
                "UPDATE resource_versions SET sealed = $3 WHERE resource = $1 AND version = $2",
                updates,
            )
        return len(updates)

    async def _prune_erased(self) -> None:
        """VACUUM after an erasure (see the module docstring). It runs outside the
        transaction, after COMMIT: the erasure stands even if this fails, and autovacuum
        prunes later, so a failure is logged rather than raised."""
        try:
            async with self._db.connection("vacuum") as conn:
                await conn.execute("VACUUM resource_versions")
        except BackendError as exc:
            log.warning("key_store.vacuum_failed", error=exc.message)


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 1``."""
    return int(status.rsplit(" ", 1)[-1])
