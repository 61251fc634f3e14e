"""Shadow policies are evaluated beside the live set and audited, never enforced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.wiring import Services
from tests.integration.kbs_helpers import attest, create_key, fetch

SHADOW = """\
version: 1
name: stricter-draft
mode: shadow
resources: ["default/*/*"]
rules:
  - name: needs-pq
    tee: sample
    when:
      - claims.svn >= 1
      - request.wrap_strength >= 3
"""


async def test_shadow_outcome_is_audited_not_enforced(
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    services: Services,
    settings: Settings,
) -> None:
    """A shadow policy that would deny does not block the release; its verdict is in the record."""
    (Path(settings.policy.dir) / "shadow.yaml").write_text(SHADOW)
    assert (await client.post("/v1/policies/reload", headers=admin_headers)).status == 200
    await create_key(client, admin_headers, "default/key/k")
    token, keypair = await attest(client, "p256")
    assert len(await fetch(client, "default/key/k", token, keypair)) == 32
    released = [
        r async for r in services.audit.iter_records(None, None) if r.event == "resource.released"
    ]
    assert released[-1].claims is not None
    shadow = released[-1].claims["shadow"]
    assert shadow[0]["policy"] == "stricter-draft"
    assert shadow[0]["decision"] == "deny"
    assert "rule.failed:stricter-draft/needs-pq#1" in shadow[0]["reasons"]
