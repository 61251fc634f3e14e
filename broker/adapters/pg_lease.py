"""A named lease with expiry in PostgreSQL: "only one replica runs the rotation scheduler".

One row per lease holds the holder and its expiry. Expiry is compared with the database's
clock (``now()``), never with a replica's, so skewed hosts agree on who holds it. A holder
that stops renewing loses the lease after ``ttl`` seconds and another replica takes over;
a holder must therefore renew well within ``ttl`` (a third of it is usual) and stop its
work when ``renew`` returns False.

A lease bounds overlap in time; it is not a lock on the work. The scheduler's rotations
stay safe even if two replicas briefly overlap (a paused holder that wakes up after its
expiry), because ``add_version`` is a compare-and-set.
"""

from __future__ import annotations

from broker.adapters.lease_rules import ROTATION_LEASE, check_lease_args
from broker.adapters.pg_db import PostgresDB

_WHAT = "lease"


class PostgresLease:
    """The lease ``name``; every replica builds one with the same name on the same database."""

    def __init__(self, db: PostgresDB, name: str = ROTATION_LEASE) -> None:
        self._db = db
        self.name = name

    async def acquire(self, holder: str, ttl: float) -> bool:
        """``Lease.acquire``: one upsert, so of several contenders exactly one wins."""
        check_lease_args(holder, ttl)
        async with self._db.connection(_WHAT) as conn:
            # The conflicting row is locked and the WHERE re-checked against its latest
            # version, so of several contenders for an expired lease exactly one wins.
            got = await conn.fetchval(
                "INSERT INTO leases AS l (name, holder, expires_at)"
                " VALUES ($1, $2, now() + make_interval(secs => $3))"
                " ON CONFLICT (name) DO UPDATE"
                " SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
                " WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder"
                " RETURNING holder",
                self.name,
                holder,
                float(ttl),
            )
        return got is not None

    async def renew(self, holder: str, ttl: float) -> bool:
        check_lease_args(holder, ttl)
        async with self._db.connection(_WHAT) as conn:
            got = await conn.fetchval(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $3)"
                " WHERE name = $1 AND holder = $2 AND expires_at > now() RETURNING holder",
                self.name,
                holder,
                float(ttl),
            )
        return got is not None

    async def release(self, holder: str) -> None:
        async with self._db.connection(_WHAT) as conn:
            await conn.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2", self.name, holder
            )

    async def holder(self) -> str | None:
        async with self._db.connection(_WHAT) as conn:
            got = await conn.fetchval(
                "SELECT holder FROM leases WHERE name = $1 AND expires_at > now()", self.name
            )
        return None if got is None else str(got)
