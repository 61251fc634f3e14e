"""An in-process broker (aiohttp test client) on a temporary data dir."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.config import Settings, load_settings, with_dev_defaults
from broker.wiring import Services, open_services
from tests.fakes import FakeClock

ALLOW_SAMPLE = textwrap.dedent(
    """\
    version: 1
    name: test-sample
    resources: ["default/*/*"]
    rules:
      - name: sample-guests
        tee: sample
        when:
          - claims.svn >= 1
    """
)

DENY_ALL_SAMPLE = textwrap.dedent(
    """\
    version: 1
    name: test-sample
    resources: ["default/*/*"]
    rules:
      - name: sample-guests
        tee: sample
        when:
          - claims.svn >= 100
    """
)


def write_policies(folder: Path, text: str = ALLOW_SAMPLE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.yaml").write_text(text)
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = with_dev_defaults(load_settings(None, {}))
    return replace(
        base,
        server=replace(base.server, data_dir=str(tmp_path / "data")),
        policy=replace(base.policy, dir=str(write_policies(tmp_path / "policies"))),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = await open_services(settings, clock=clock)
    yield svc
    await svc.close()


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, services: Services
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings, services=services))


@pytest.fixture
def admin_headers(settings: Settings) -> dict[str, str]:
    token = (Path(settings.server.data_dir) / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}
