"""One log line per request: its route, status and time, and what it did or why it failed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from broker.logging import configure_logging
from tests.integration.kbs_helpers import attest, create_key, fetch


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("json", "info", cache=False)
    yield
    structlog.reset_defaults()


def _lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]


@pytest.mark.usefixtures("json_logs")
async def test_each_request_makes_one_line_that_names_its_outcome(
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """auth, attest, release, and a refused release: four requests, four lines."""
    await create_key(client, admin_headers, "default/app/k")
    capfd.readouterr()
    token, keypair = await attest(client)
    await fetch(client, "default/app/k", token, keypair)
    refused = await client.get(
        "/kbs/v0/resource/default/app/missing", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status == 404

    lines = _lines(capfd)
    assert [line["event"] for line in lines] == ["request.done"] * 4
    assert len({line["request_id"] for line in lines}) == 4
    auth, attested, released, missing = lines
    assert auth["route"] == "/kbs/v0/auth" and auth["status"] == 200 and "outcome" not in auth
    assert attested["outcome"] == "evidence.verified" and attested["tee"] == "sample"
    assert attested["jti"] and token not in json.dumps(lines)
    assert released["outcome"] == "key.released"
    assert (released["resource"], released["version"]) == ("default/app/k", 1)
    assert released["alg"] == "ECDH-ES+A256KW" and released["status"] == 200
    # A refusal says why, and nothing of the release before it leaks into its line.
    assert missing["status"] == 404 and missing["code"] == "ResourceNotFound"
    assert "outcome" not in missing and "alg" not in missing
