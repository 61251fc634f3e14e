"""schemathesis against /openapi.json: no 5xx, answers match the schema, errors use Error.

The broker runs in-process (dev settings, a temporary data dir) on 127.0.0.1
in a background thread, so schemathesis' synchronous client can call it.
Every operation gets a bounded number of positive and negative examples.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.api.app import create_app
from broker.api.openapi import build_document
from broker.config import Settings, load_settings, with_dev_defaults
from tests.integration.conftest import write_policies

pytestmark = pytest.mark.filterwarnings(
    # schemathesis' own generators warn about formats it fills in loosely.
    "ignore::hypothesis.errors.NonInteractiveExampleWarning",
)

EXAMPLES = 15
# not_a_server_error is asserted separately, with the request that caused it.
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Operations whose side effects would break the run for the others.
SKIPPED = {("POST", "/v1/root-key/rotate")}


def _has_constrained_input(item: dict[str, Any], method: str) -> bool:
    op = item[method]
    params = [*item.get("parameters", []), *op.get("parameters", [])]
    return "requestBody" in op or any(p["schema"] != {"type": "string"} for p in params)


OPERATIONS = [
    (method.upper(), path)
    for path, item in build_document()["paths"].items()
    for method in item
    if method != "parameters" and (method.upper(), path) not in SKIPPED
]

# Only operations with constrained input have schema-invalid requests to send.
NEGATIVE_OPERATIONS = [
    (method, path)
    for method, path in OPERATIONS
    if _has_constrained_input(build_document()["paths"][path], method.lower())
]


@dataclass(frozen=True)
class Broker:
    base_url: str
    admin_headers: dict[str, str]


def _settings(tmp: Path) -> Settings:
    base = with_dev_defaults(load_settings(None, {}))
    return replace(
        base,
        server=replace(base.server, data_dir=str(tmp / "data")),
        policy=replace(base.policy, dir=str(write_policies(tmp / "policies"))),
    )


@pytest.fixture(scope="module")
def quiet_logs() -> Iterator[None]:
    """Thousands of requests: keep warnings and crashes, in plain text (rich tracebacks are slow)."""
    structlog.configure(
        processors=[structlog.processors.format_exc_info, structlog.processors.KeyValueRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def broker(quiet_logs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    settings = _settings(tmp_path_factory.mktemp("schemathesis"))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        token = (Path(settings.server.data_dir) / "admin.token").read_text().strip()
        yield Broker(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"})
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


SCHEMA = from_dict(build_document())
# Unknown query parameters are ignored, as HTTP servers do; only declared ones are checked.
SCHEMA.config.generation.update(allow_extra_parameters=False)


def _run(broker: Broker, method: str, path: str, mode: GenerationMode) -> None:
    operation = SCHEMA[path][method]
    headers = broker.admin_headers if path.startswith("/v1/") else {}
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        with requests.Session() as session:
            response = case.call(base_url=broker.base_url, session=session, headers=headers)
        assert response.status_code < 500 or (path, response.status_code) == ("/readyz", 503), (
            f"{method} {path} -> {response.status_code}: {response.text[:300]}\n"
            f"{case.as_curl_command()}"
        )
        case.validate_response(response, checks=checks, headers=headers)

    check()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_positive_examples_conform(broker: Broker, method: str, path: str) -> None:
    """Schema-valid requests get documented answers and never a 5xx."""
    _run(broker, method, path, GenerationMode.POSITIVE)


@pytest.mark.parametrize(
    ("method", "path"), NEGATIVE_OPERATIONS, ids=[f"{m} {p}" for m, p in NEGATIVE_OPERATIONS]
)
def test_negative_examples_are_rejected(broker: Broker, method: str, path: str) -> None:
    """Schema-invalid requests are refused with a documented 4xx and the Error body."""
    _run(broker, method, path, GenerationMode.NEGATIVE)
