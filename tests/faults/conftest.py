"""The in-process broker fixtures of the integration suite, shared with the fault tests."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    admin_headers,
    client,
    clock,
    services,
    settings,
)
