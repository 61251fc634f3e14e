"""Admin API for policy authors: ``POST /v1/policies/simulate``.

Body: the draft policy directory as ``{"name.yaml": text, "refs/x.yaml": text}``;
query ``since`` (``30d`` default). The answer says which recent attestations
would lose or gain access under the draft (see ``broker.policy.simulate``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.api.access import admin_ctx
from broker.api.keys import SERVICES, SETTINGS
from broker.api.middleware import read_body
from broker.errors import MalformedRequest, PolicyError
from broker.policy.load import MAX_FILES, load_policy_texts
from broker.policy.simulate import parse_since, simulate

routes = web.RouteTableDef()


class DraftInvalid(MalformedRequest):
    """The draft policy set does not load (its first error is the detail)."""

    code = "DraftPolicyInvalid"


def _draft_files(body: bytes) -> dict[str, bytes]:
    try:
        doc: Any = json.loads(body or b"{}")
    except ValueError:
        raise MalformedRequest("body must be a JSON object of file name -> text") from None
    if not isinstance(doc, dict) or not doc or len(doc) > MAX_FILES:
        raise MalformedRequest(f"body must map 1 to {MAX_FILES} file names to text")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise MalformedRequest("every file name and text must be a string")
    return {name: text.encode("utf-8") for name, text in doc.items()}


@routes.post("/v1/policies/simulate")
async def simulate_draft(request: web.Request) -> web.Response:
    admin_ctx(request)
    services = request.app[SERVICES]
    files = _draft_files(await read_body(request, request.app[SETTINGS].server.max_request_bytes))
    window = parse_since(request.query.get("since", "30d"))
    now = services.clock.now()
    try:
        draft = load_policy_texts(files, now=now, base="draft")
    except PolicyError as exc:
        raise DraftInvalid(exc.diagnostics()) from None
    records = [r.to_dict() async for r in services.audit.iter_records(now - window, None)]
    report = simulate(records, live=services.policies.current, draft=draft, now=now)
    return web.json_response(report.to_dict())
