"""The audit tables in PostgreSQL, and their per-component schema versions.

Two components, each with its own row in ``schema_versions`` (next to the key store's
``store``): ``audit`` (the records and the head row) and ``audit-transparency``
(checkpoints and verifier keys). Every table here is append-only, enforced by triggers,
so an operator with plain DML rights cannot rewrite history; one with DDL rights can,
which is what checkpoints signed and held elsewhere detect.
"""

from __future__ import annotations

from typing import Final

from broker.adapters.pg_db import PostgresDB
from broker.errors import BackendError

__all__ = [
    "RECORDS_COMPONENT",
    "RECORDS_SCHEMA",
    "RECORDS_VERSION",
    "TRANSPARENCY_COMPONENT",
    "TRANSPARENCY_SCHEMA",
    "TRANSPARENCY_VERSION",
    "migrate_component",
]

RECORDS_COMPONENT: Final = "audit"
RECORDS_VERSION: Final = 1
TRANSPARENCY_COMPONENT: Final = "audit-transparency"
TRANSPARENCY_VERSION: Final = 1
_SCHEMA_LOCK: Final = "attested-broker schema"  # the lock PostgresDB migrates under

# The one-row head table is the cross-replica lock and the chain's tip; seq -1 is empty.
# repeat('0', 64) is GENESIS_HASH (checked by the adapter tests).
RECORDS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_record (
    seq       BIGINT PRIMARY KEY CHECK (seq >= 0),
    time      TIMESTAMPTZ NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_record_time ON audit_record(time);
CREATE TABLE IF NOT EXISTS audit_head (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (one, seq, hash) VALUES (true, -1, repeat('0', 64))
    ON CONFLICT (one) DO NOTHING;
CREATE OR REPLACE FUNCTION audit_record_link() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A row-level BEFORE trigger sees the rows inserted before it by the same statement.
    IF (NEW.seq = 0 AND NEW.prev_hash <> repeat('0', 64))
       OR (NEW.seq > 0 AND NEW.prev_hash IS DISTINCT FROM
           (SELECT hash FROM audit_record WHERE seq = NEW.seq - 1)) THEN
        RAISE EXCEPTION 'audit record does not link to its predecessor'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION audit_record_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER audit_record_link BEFORE INSERT ON audit_record
    FOR EACH ROW EXECUTE FUNCTION audit_record_link();
CREATE OR REPLACE TRIGGER audit_record_no_change BEFORE UPDATE OR DELETE ON audit_record
    FOR EACH ROW EXECUTE FUNCTION audit_record_frozen();
CREATE OR REPLACE TRIGGER audit_record_no_truncate BEFORE TRUNCATE ON audit_record
    FOR EACH STATEMENT EXECUTE FUNCTION audit_record_frozen();
"""

TRANSPARENCY_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    id      BIGSERIAL PRIMARY KEY,
    size    BIGINT NOT NULL CHECK (size >= 0),
    time    TIMESTAMPTZ NOT NULL,
    key_id  TEXT NOT NULL,
    note    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoint_size ON audit_checkpoint(size, id);
CREATE TABLE IF NOT EXISTS audit_verifier_key (
    id           BIGSERIAL UNIQUE,
    key_id       TEXT PRIMARY KEY,
    verifier_key TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE OR REPLACE FUNCTION audit_transparency_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER audit_checkpoint_no_change BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_transparency_frozen();
CREATE OR REPLACE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_transparency_frozen();
CREATE OR REPLACE TRIGGER audit_verifier_key_no_change
    BEFORE UPDATE OR DELETE ON audit_verifier_key
    FOR EACH ROW EXECUTE FUNCTION audit_transparency_frozen();
CREATE OR REPLACE TRIGGER audit_verifier_key_no_truncate BEFORE TRUNCATE ON audit_verifier_key
    FOR EACH STATEMENT EXECUTE FUNCTION audit_transparency_frozen();
"""


async def migrate_component(db: PostgresDB, component: str, version: int, ddl: str) -> None:
    """Create ``component``'s tables (idempotent) and record or check its schema version.

    Raises:
        BackendError: the server failed, or the stored version is newer (not retryable).
    """
    async with db.transaction(f"creating the {component} schema") as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _SCHEMA_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions"
            " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        found = await conn.fetchval(
            "SELECT version FROM schema_versions WHERE component = $1", component
        )
        if found is not None and found > version:
            raise BackendError(
                f"the {component} schema is version {found}; this broker supports up to {version}",
                retryable=False,
            )
        await conn.execute(ddl)
        if found is None:
            await conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES ($1, $2)",
                component,
                version,
            )
