"""OCSF 1.3 API Activity mapping of audit records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.ocsf import OCSF_VERSION, activity_for, to_ocsf, to_ocsf_lines
from broker.audit.record import AuditRecordInvalid, chain_next
from tests.unit.audit._factory import make_chain, make_event

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit-format.md"
# Required by OCSF 1.3 for every event of class API Activity (base event + class).
REQUIRED = {
    "activity_id",
    "category_uid",
    "class_uid",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
    "actor",
    "api",
    "src_endpoint",
}


def test_release_maps_to_api_activity_read_allowed() -> None:
    """A key release is API Activity / Read, Success, Allowed, with the resource and version."""
    record = make_chain(1)[0]
    event = to_ocsf(record)
    assert set(event) >= REQUIRED
    assert (event["class_uid"], event["category_uid"], event["activity_id"]) == (6003, 6, 2)
    assert event["type_uid"] == 600302
    assert event["type_name"] == "API Activity: Read"
    assert (event["status_id"], event["severity_id"]) == (1, 1)
    assert (event["action_id"], event["disposition_id"]) == (1, 1)
    assert event["metadata"]["profiles"] == ["security_control"]
    assert event["metadata"]["version"] == OCSF_VERSION
    assert event["metadata"]["uid"] == record.hash
    assert event["metadata"]["sequence"] == 0
    assert event["metadata"]["original_time"] == "2025-01-02T03:04:05.678901Z"
    assert event["time"] == int(record.time.timestamp() * 1000)
    assert event["resources"] == [
        {
            "name": "tenant-a/db/key",
            "uid": "tenant-a/db/key",
            "type": "resource",
            "data": {"version": 3},
        }
    ]
    assert event["src_endpoint"] == {"ip": "127.0.0.1"}
    assert event["actor"] == {"app_name": "tee:snp"}
    assert event["unmapped"]["pubkey_thumbprint"] == record.pubkey_thumbprint
    assert event["unmapped"]["claims"]["tcb"]["snp"] == 23


def test_denial_maps_to_failure_blocked() -> None:
    """A denial is a Failure with disposition Blocked, the error code and the reasons."""
    record = chain_next(
        None,
        make_event(
            event="resource.denied",
            decision="deny",
            reasons=("policy.measurement_mismatch",),
            error_code="PolicyDenied",
            detail="token abc",
            version=None,
            client="not-an-ip",
        ),
    )
    event = to_ocsf(record.to_dict())
    assert (event["status_id"], event["severity_id"]) == (2, 3)
    assert (event["action_id"], event["disposition_id"], event["disposition"]) == (2, 2, "Blocked")
    assert event["status_code"] == "PolicyDenied"
    assert event["status_detail"] == "token abc"
    assert event["api"]["response"] == {"error": "PolicyDenied", "error_message": "token abc"}
    assert "policy.measurement_mismatch" in event["message"]
    assert "data" not in event["resources"][0]
    assert event["src_endpoint"] == {"name": "not-an-ip"}


def test_admin_event_names_the_admin() -> None:
    """Admin events carry the admin as actor.user and no security_control outcome for 'ok'."""
    record = chain_next(
        None,
        make_event(
            event="admin.key_rotated", decision="ok", actor="ops@example", tee="", client=""
        ),
    )
    event = to_ocsf(record)
    assert event["actor"] == {"user": {"name": "ops@example", "type": "Admin", "type_id": 2}}
    assert event["activity_id"] == 3
    assert "disposition_id" not in event
    assert "profiles" not in event["metadata"]
    assert event["src_endpoint"] == {"name": "unknown"}


@pytest.mark.parametrize(
    ("name", "activity"),
    [
        ("kbs.auth", 1),
        ("kbs.attest", 1),
        ("resource.released", 2),
        ("resource.denied", 2),
        ("admin.key_created", 1),
        ("admin.secret_created", 1),
        ("admin.key_version_restored", 1),
        ("admin.key_rotated", 3),
        ("admin.key_configured", 3),
        ("admin.key_version_retired", 3),
        ("admin.policy_reload", 3),
        ("admin.resource_deleted", 4),
        ("admin.key_version_destroyed", 4),
        ("broker.started", 99),
    ],
)
def test_activity_table(name: str, activity: int) -> None:
    """Every event the broker emits has its documented activity."""
    assert activity_for(name) == activity


def test_every_record_field_survives() -> None:
    """Each record field appears in the event, mapped or under unmapped."""
    record = make_chain(1)[0]
    event = to_ocsf(record)
    text = json.dumps(event)
    for name, value in record.to_dict().items():
        if isinstance(value, str) and value:
            assert value in text, name


def test_lines_are_jsonl() -> None:
    """to_ocsf_lines yields one compact, sorted JSON object per line."""
    lines = list(to_ocsf_lines(make_chain(3)))
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.endswith("\n")
        assert "\n" not in line[:-1]
        assert json.loads(line)["metadata"]["sequence"] == i


def test_invalid_dicts_raise_record_errors() -> None:
    """A record dict that fails format 1 (or its hash) is refused."""
    data = make_chain(1)[0].to_dict()
    data["detail"] = "edited"
    with pytest.raises(AuditRecordInvalid):
        to_ocsf(data)
    with pytest.raises(AuditRecordInvalid):
        list(to_ocsf_lines([{"seq": 0}]))


def test_mapping_table_is_documented() -> None:
    """The documentation's activity table lists every event name the tests pin."""
    doc = DOC.read_text(encoding="utf-8")
    for name in ("kbs.auth", "kbs.attest", "resource.released", "resource.denied"):
        assert re.search(rf"`{re.escape(name)}`", doc)
    assert OCSF_VERSION in doc


@settings(max_examples=100, deadline=None)
@given(
    detail=st.text(max_size=50),
    client=st.text(max_size=20),
    decision=st.sampled_from(["allow", "deny", "error", "ok"]),
)
def test_any_record_maps_to_valid_json(detail: str, client: str, decision: str) -> None:
    """Any text in the record still gives one JSON line with the required attributes."""
    record = chain_next(None, make_event(detail=detail, client=client, decision=decision))
    (line,) = to_ocsf_lines([record])
    event: dict[str, Any] = json.loads(line)
    assert set(event) >= REQUIRED
