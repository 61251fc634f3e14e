"""Versioned keys and secrets in SQLite (the KeyStore port).

Each resource has versions 1..n, one of them current. A version is released
only while ``active`` and at or above the resource's ``min_release_version``;
``destroy`` erases the sealed material (``secure_delete`` overwrites it on
disk), leaving only the metadata row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from broker.adapters.sqlite_db import SQLiteDB
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


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).isoformat()


def _info(row: sqlite3.Row) -> ResourceInfo:
    return ResourceInfo(
        id=row["id"],
        kind=row["kind"],
        current_version=row["current_version"],
        min_release_version=row["min_release_version"],
        rotate_every=row["rotate_every"],
        last_rotated_at=datetime.fromisoformat(row["last_rotated_at"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        size=row["size"],
        source=row["source"],
    )


class SQLiteKeyStore:
    def __init__(self, db: SQLiteDB) -> None:
        self._db = db

    async def _one(self, sql: str, args: tuple[object, ...]) -> sqlite3.Row | None:
        try:
            rows = self._db.read(sql, args)
        except sqlite3.Error as exc:
            raise BackendError(f"key store read failed: {exc}") from None
        return next(iter(rows), None)

    async def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.read(sql, args)
        except sqlite3.Error as exc:
            raise BackendError(f"key store read failed: {exc}") from None

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
        stamp = _stamp(now)
        try:
            async with self._db.transaction() as db:
                try:
                    await db.execute(
                        "INSERT INTO resources (id, kind, current_version, rotate_every,"
                        " last_rotated_at, created_at, created_by, size, source)"
                        " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
                        (resource, kind, rotate_every, stamp, stamp, actor, size, source),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"resource {resource} already exists") from None
                await db.execute(
                    "INSERT INTO resource_versions"
                    " (resource, version, sealed, size, created_at, created_by)"
                    " VALUES (?, 1, ?, ?, ?, ?)",
                    (resource, sealed, size, stamp, actor),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        return await self.info(resource)

    async def info(self, resource: str) -> ResourceInfo:
        row = await self._one("SELECT * FROM resources WHERE id = ?", (resource,))
        if row is None:
            raise ResourceNotFound(f"no resource {resource}")
        return _info(row)

    async def get_version(self, resource: str, version: int | None) -> StoredValue:
        # One round trip: the release path calls this for every key it sends.
        row = await self._one(
            "SELECT r.*, v.version AS v_version, v.state AS v_state, v.sealed AS v_sealed"
            " FROM resources r LEFT JOIN resource_versions v"
            " ON v.resource = r.id AND v.version = COALESCE(?, r.current_version)"
            " WHERE r.id = ?",
            (version, resource),
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
        stamp = _stamp(now)
        try:
            async with self._db.transaction() as db:
                # Compare-and-set: the version number (and, for the scheduler,
                # the last rotation time) must be what the caller read, so two
                # rotations racing across workers or restarts cannot both land.
                sql = (
                    "UPDATE resources SET current_version = ?, last_rotated_at = ?, size = ?"
                    " WHERE id = ? AND current_version = ?"
                )
                args: tuple[object, ...] = (version, stamp, size, resource, version - 1)
                if expected_rotated_at is not None:
                    sql += " AND last_rotated_at = ?"
                    args = (*args, _stamp(expected_rotated_at))
                cur = await db.execute(sql, args)
                if cur.rowcount != 1:
                    raise Conflict(f"resource {resource} changed concurrently; not rotated")
                await db.execute(
                    "INSERT INTO resource_versions"
                    " (resource, version, sealed, size, created_at, created_by)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (resource, version, sealed, size, stamp, actor),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        return await self.info(resource)

    async def versions(self, resource: str) -> Sequence[VersionInfo]:
        await self.info(resource)
        rows = await self._all(
            "SELECT version, state, created_at, created_by FROM resource_versions"
            " WHERE resource = ? ORDER BY version",
            (resource,),
        )
        return [
            VersionInfo(
                r["version"], r["state"], datetime.fromisoformat(r["created_at"]), r["created_by"]
            )
            for r in rows
        ]

    async def list(self) -> Sequence[ResourceInfo]:
        return [_info(r) for r in await self._all("SELECT * FROM resources ORDER BY id")]

    async def update_settings(
        self,
        resource: str,
        *,
        min_release_version: int | None = None,
        rotate_every: int | None = None,
        clear_rotate_every: bool = False,
    ) -> ResourceInfo:
        info = await self.info(resource)
        if min_release_version is not None and not 1 <= min_release_version <= info.current_version:
            raise MalformedRequest(
                f"min_release_version must be between 1 and the current version"
                f" {info.current_version}"
            )
        new_min = info.min_release_version if min_release_version is None else min_release_version
        new_every = None if clear_rotate_every else (rotate_every or info.rotate_every)
        try:
            async with self._db.access() as db:
                await db.execute(
                    "UPDATE resources SET min_release_version = ?, rotate_every = ? WHERE id = ?",
                    (new_min, new_every, resource),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        return await self.info(resource)

    async def set_version_state(self, resource: str, version: int, state: str) -> None:
        if state not in (ACTIVE, RETIRED):
            raise MalformedRequest("a version can only be set active or retired")
        row = await self._one(
            "SELECT state FROM resource_versions WHERE resource = ? AND version = ?",
            (resource, version),
        )
        if row is None:
            raise ResourceNotFound(f"resource {resource} has no version {version}")
        if row["state"] == DESTROYED:
            raise KeyVersionDestroyed(f"version {version} of {resource} was destroyed")
        try:
            async with self._db.access() as db:
                await db.execute(
                    "UPDATE resource_versions SET state = ? WHERE resource = ? AND version = ?",
                    (state, resource, version),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None

    async def destroy_version(self, resource: str, version: int) -> None:
        info = await self.info(resource)
        if version == info.current_version:
            raise Conflict("the current version cannot be destroyed; rotate first")
        try:
            async with self._db.transaction() as db:
                cur = await db.execute(
                    "UPDATE resource_versions SET state = ?, sealed = NULL"
                    " WHERE resource = ? AND version = ?",
                    (DESTROYED, resource, version),
                )
                if cur.rowcount != 1:
                    raise ResourceNotFound(f"resource {resource} has no version {version}")
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None

    async def due(self, now: datetime) -> Sequence[ResourceInfo]:
        rows = await self._all(
            "SELECT * FROM resources WHERE rotate_every IS NOT NULL AND kind = 'data-key'"
        )
        infos = [_info(r) for r in rows]
        return [
            i
            for i in infos
            if i.rotate_every is not None
            and (now - i.last_rotated_at).total_seconds() >= i.rotate_every
        ]

    async def delete(self, resource: str) -> None:
        try:
            async with self._db.transaction() as db:
                # Erase material first so secure_delete overwrites it.
                await db.execute(
                    "UPDATE resource_versions SET sealed = NULL WHERE resource = ?", (resource,)
                )
                cur = await db.execute("DELETE FROM resources WHERE id = ?", (resource,))
                if cur.rowcount == 0:
                    raise ResourceNotFound(f"no resource {resource}")
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None

    async def all_sealed(self) -> Sequence[tuple[str, int, bytes]]:
        rows = await self._all(
            "SELECT resource, version, sealed FROM resource_versions"
            " WHERE sealed IS NOT NULL AND length(sealed) > 0"
            " ORDER BY resource, version"
        )
        return [(r["resource"], r["version"], bytes(r["sealed"])) for r in rows]

    async def check_writable(self) -> None:
        await self._db.check_writable()

    async def reseal_all(self, reseal: Callable[[str, int, bytes], Awaitable[bytes]]) -> int:
        """Re-seals every stored value in ONE transaction (no writer can slip in).

        ``reseal`` runs with the write lock held; plaintext never leaves memory.
        Values kept elsewhere (``vault-kv``, empty here) are skipped.
        """
        try:
            async with self._db.transaction() as db:
                async with db.execute(
                    "SELECT resource, version, sealed FROM resource_versions"
                    " WHERE sealed IS NOT NULL"
                ) as cur:
                    rows = list(await cur.fetchall())
                updates = [
                    (
                        await reseal(r["resource"], r["version"], bytes(r["sealed"])),
                        r["resource"],
                        r["version"],
                    )
                    for r in rows
                ]
                await db.executemany(
                    "UPDATE resource_versions SET sealed = ? WHERE resource = ? AND version = ?",
                    updates,
                )
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        return len(updates)
