"""``broker evidence verify``: real vectors, time windows, negatives and input errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

import broker.evidence.snp
from broker.cli.evidence import MAX_INPUT_BYTES, evidence, verify
from tests.unit.evidence.test_x509 import ec_key, make_cert
from tests.vectors import (
    REPO_ROOT,
    expected,
    parse_time,
    read_bytes,
    requires_evidence,
    vector_ids,
    vector_path,
)

TEE_DIRS = ("sev-snp", "tdx", "sgx", "nitro", "azure-vtpm")
POSITIVES = [(d, v) for d in TEE_DIRS for v in vector_ids(d)]
POSITIVE_IDS = [f"{d}/{v}" for d, v in POSITIVES]
# What a DCAP verifier adds to the quote's claims: the TCB evaluation, which the
# corpus lists under "expected" rather than "claims".
DCAP_TCB_CLAIMS = (
    "tcb_status",
    "advisory_ids",
    "qe_identity_status",
    "tdx_module_status",
    "tcb_date",
    "tcb_eval_data_number",
)
EVIDENCE_CODES = {
    "EvidenceMalformed",
    "EvidenceSignatureInvalid",
    "CollateralInvalid",
    "EvidenceNotFresh",
    "EvidenceInvalid",
}
GARBAGE = bytes(range(256)) * 5


def _invoke(*args: str) -> tuple[int, dict[str, Any]]:
    """Runs the command; its stdout must be exactly one JSON object line."""
    result = CliRunner().invoke(evidence, ["verify", *args], catch_exceptions=False)
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output
    document: dict[str, Any] = json.loads(lines[0])
    return result.exit_code, document


def _command(tee_dir: str, files: dict[str, str]) -> str:
    if tee_dir == "azure-vtpm":
        return "az-tdx-vtpm" if "collateral" in files else "az-snp-vtpm"
    return tee_dir


def _args(tee_dir: str, vector_id: str, **replace: str) -> list[str]:
    """The command line for a vector; ``replace`` swaps one input for another path."""
    files = expected(tee_dir, vector_id)["files"]
    paths = {slot: str(vector_path(tee_dir, name)) for slot, name in files.items()}
    paths.update(replace)
    command = _command(tee_dir, files)
    if command == "sev-snp":
        return [command, paths["report"], "--vcek", paths.get("vcek") or paths["vlek"]]
    if command in ("tdx", "sgx"):
        return [command, paths["quote"], "--collateral", paths["collateral"]]
    if command == "nitro":
        return [command, paths["document"]]
    if command == "az-tdx-vtpm":
        return [command, paths["evidence"], "--collateral", paths["collateral"]]
    return [command, paths["evidence"]]


def _at(tee_dir: str, vector_id: str) -> str:
    return str(expected(tee_dir, vector_id)["verification_time"])


def _error(document: dict[str, Any]) -> tuple[str, str]:
    assert document["verified"] is False
    assert set(document) == {"verified", "error"}
    return document["error"]["code"], document["error"]["message"]


# -- every positive vector -----------------------------------------------------------------


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id"), POSITIVES, ids=POSITIVE_IDS)
def test_positive_vector_verifies_with_expected_claims(tee_dir: str, vector_id: str) -> None:
    """Every positive vector verifies at its time with exactly the corpus's claims."""
    exp = expected(tee_dir, vector_id)
    args = _args(tee_dir, vector_id)
    code, out = _invoke(*args, "--at", _at(tee_dir, vector_id))
    assert code == 0, out
    assert set(out) == {"verified", "tee", "claims", "flags"}
    assert out["verified"] is True
    assert out["tee"] == args[0]
    claims = dict(out["claims"])
    if args[0] in ("tdx", "sgx"):
        tcb = {name: claims.pop(name) for name in DCAP_TCB_CLAIMS if name in claims}
        for name in ("tcb_status", "advisory_ids", "qe_identity_status", "tdx_module_status"):
            if exp["expected"].get(name) is not None:
                assert tcb[name] == exp["expected"][name], name
    assert claims == exp["claims"]
    assert out["flags"]["debug"] is exp["expected"]["debug"]


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id"), POSITIVES, ids=POSITIVE_IDS)
@pytest.mark.parametrize("side", ["after", "before"])
def test_positive_vector_rejected_outside_its_window(
    tee_dir: str, vector_id: str, side: str
) -> None:
    """One second outside the validity window: expired certificate or stale collateral."""
    start, end = (parse_time(t) for t in expected(tee_dir, vector_id)["time_window"])
    when = end + timedelta(seconds=1) if side == "after" else start - timedelta(seconds=1)
    code, out = _invoke(*_args(tee_dir, vector_id), "--at", when.isoformat())
    assert code == 1
    error_code, message = _error(out)
    assert error_code == "CollateralInvalid"
    assert any(word in message for word in ("not valid at", "stale", "not current", "issued"))


@requires_evidence
def test_default_time_is_now() -> None:
    """Without --at the check runs now, when every Nitro signing certificate has expired."""
    code, out = _invoke(*_args("nitro", "nitrite-prod"))
    assert code == 1
    assert _error(out)[0] == "CollateralInvalid"


# -- negatives -------------------------------------------------------------------------------

# (tee dir, base vector, slot replaced, negative file, expected code)
NEGATIVES = [
    ("sev-snp", "trustee-milan-vcek", "report", "trustee-milan-vcek.sigflip.report.bin",
     "EvidenceSignatureInvalid"),
    ("sev-snp", "trustee-milan-vcek", "report",
     "trustee-milan-vcek.measurement-changed.report.bin", "EvidenceSignatureInvalid"),
    ("sev-snp", "trustee-milan-vcek", "report", "trustee-milan-vcek.truncated.report.bin",
     "EvidenceMalformed"),
    ("sev-snp", "trustee-milan-vcek", "vcek", "trustee-milan-vcek.wrong-vcek.der",
     "EvidenceSignatureInvalid"),
    ("sev-snp", "trustee-milan-vcek", "vcek", "fake-vcek-not-amd-signed.der",
     "EvidenceSignatureInvalid"),
    ("tdx", "dcapqvl-tdx-uptodate", "quote", "dcapqvl-tdx-uptodate.sigflip.quote.bin",
     "EvidenceSignatureInvalid"),
    ("tdx", "dcapqvl-tdx-uptodate", "quote", "dcapqvl-tdx-uptodate.mrtd-changed.quote.bin",
     "EvidenceSignatureInvalid"),
    ("tdx", "dcapqvl-tdx-uptodate", "quote", "dcapqvl-tdx-uptodate.truncated.quote.bin",
     "EvidenceMalformed"),
    ("tdx", "dcapqvl-tdx-uptodate", "collateral",
     "dcapqvl-tdx-uptodate.tcbinfo-tampered.collateral.json", "CollateralInvalid"),
    ("sgx", "dcapqvl-sgx-config-swhardening", "quote", "dcapqvl-sgx.sigflip.quote.bin",
     "EvidenceSignatureInvalid"),
    ("sgx", "dcapqvl-sgx-config-swhardening", "quote", "dcapqvl-sgx.mrenclave-changed.quote.bin",
     "EvidenceSignatureInvalid"),
    ("sgx", "dcapqvl-sgx-config-swhardening", "quote", "dcapqvl-sgx.truncated.quote.bin",
     "EvidenceMalformed"),
    ("nitro", "nitrite-prod", "document", "nitrite-prod.sigflip.cbor",
     "EvidenceSignatureInvalid"),
    ("nitro", "nitrite-prod", "document", "nitrite-prod.pcr0-changed.cbor",
     "EvidenceSignatureInvalid"),
    ("nitro", "nitrite-prod", "document", "nitrite-prod.truncated.cbor", "EvidenceMalformed"),
    # The upstream negative's chain is valid at the time of polygon-expired-debug.
    ("nitro", "polygon-expired-debug", "document", "polygon-invalid.upstream.cbor",
     "EvidenceSignatureInvalid"),
    ("azure-vtpm", "az-snp-vtpm-v2", "evidence", "az-snp-vtpm-v2.tpm-sigflip.evidence.json",
     "EvidenceSignatureInvalid"),
    ("azure-vtpm", "az-snp-vtpm-v2", "evidence", "az-snp-vtpm-v2.pcr7-changed.evidence.json",
     "EvidenceSignatureInvalid"),
    ("azure-vtpm", "az-snp-vtpm-v2", "evidence",
     "az-snp-vtpm-v2.runtime-data-changed.evidence.json", "EvidenceSignatureInvalid"),
]  # fmt: skip


@requires_evidence
def test_negative_table_covers_the_corpus() -> None:
    """Every file in a negative/ folder of the corpus has a row in NEGATIVES."""
    listed = {(d, name) for d, _, _, name, _ in NEGATIVES}
    found = {(d, p.name) for d in TEE_DIRS for p in vector_path(d, "negative").glob("*")}
    assert found == listed


@requires_evidence
@pytest.mark.parametrize(
    ("tee_dir", "base", "slot", "name", "error_code"),
    NEGATIVES,
    ids=[row[3] for row in NEGATIVES],
)
def test_negative_vector_rejected(
    tee_dir: str, base: str, slot: str, name: str, error_code: str
) -> None:
    """Each negative, paired with its base vector's other inputs, exits 1 with its cause."""
    path = str(vector_path(tee_dir, "negative", name))
    code, out = _invoke(*_args(tee_dir, base, **{slot: path}), "--at", _at(tee_dir, base))
    assert code == 1
    assert _error(out)[0] == error_code


# (command's base vector, slot replaced, donor (tee dir, file), expected code)
MISMATCHES = [
    # A quote with the collateral of another platform (FMSPC mismatch).
    ("tdx", "oak-gcp-tdx-uptodate", "collateral",
     ("tdx", "dcapqvl-tdx-uptodate.collateral.json"), "CollateralInvalid"),
    # A quote where the collateral should be.
    ("tdx", "dcapqvl-tdx-uptodate", "collateral",
     ("tdx", "dcapqvl-tdx-uptodate.quote.bin"), "CollateralInvalid"),
    # A TDX quote handed to the SGX command.
    ("sgx", "dcapqvl-sgx-config-swhardening", "quote",
     ("tdx", "dcapqvl-tdx-uptodate.quote.bin"), "EvidenceMalformed"),
    # A Nitro document where the SNP report should be.
    ("sev-snp", "trustee-milan-vcek", "report",
     ("nitro", "nitrite-prod.cbor"), "EvidenceMalformed"),
]  # fmt: skip


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id", "slot", "donor", "error_code"), MISMATCHES)
def test_mismatched_inputs_rejected(
    tee_dir: str, vector_id: str, slot: str, donor: tuple[str, str], error_code: str
) -> None:
    """Inputs that belong to another vector or another kind are rejected, not mixed."""
    args = _args(tee_dir, vector_id, **{slot: str(vector_path(*donor))})
    code, out = _invoke(*args, "--at", _at(tee_dir, vector_id))
    assert code == 1
    assert _error(out)[0] == error_code


@requires_evidence
@pytest.mark.parametrize(
    ("command", "vector_id"), [("az-tdx-vtpm", "az-snp-vtpm-v2"), ("az-snp-vtpm", "az-tdx-vtpm")]
)
def test_azure_evidence_of_the_other_kind_rejected(command: str, vector_id: str) -> None:
    """SNP vTPM evidence given to the TDX command (and back) is malformed for it."""
    path = str(vector_path("azure-vtpm", f"{vector_id}.evidence.json"))
    extra = ["--collateral", str(vector_path("azure-vtpm", "az-tdx-vtpm.collateral.json"))]
    args = [command, path, *(extra if command == "az-tdx-vtpm" else [])]
    code, out = _invoke(*args, "--at", _at("azure-vtpm", vector_id))
    assert code == 1
    assert _error(out)[0] == "EvidenceMalformed"


# -- input errors ----------------------------------------------------------------------------

# One base vector per command; the slot is the evidence itself.
BASES = [
    ("sev-snp", "trustee-milan-vcek", "report"),
    ("tdx", "dcapqvl-tdx-uptodate", "quote"),
    ("sgx", "dcapqvl-sgx-config-swhardening", "quote"),
    ("nitro", "nitrite-prod", "document"),
    ("azure-vtpm", "az-snp-vtpm-v2", "evidence"),
    ("azure-vtpm", "az-tdx-vtpm", "evidence"),
]
BASE_IDS = [row[1] for row in BASES]


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id", "slot"), BASES, ids=BASE_IDS)
def test_garbage_evidence_is_malformed(
    tee_dir: str, vector_id: str, slot: str, tmp_path: Path
) -> None:
    """A file of garbage in place of the evidence exits 1 with EvidenceMalformed."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(GARBAGE)
    args = _args(tee_dir, vector_id, **{slot: str(garbage)})
    code, out = _invoke(*args, "--at", _at(tee_dir, vector_id))
    assert code == 1
    assert _error(out)[0] == "EvidenceMalformed"


def _slots(tee_dir: str, vector_id: str) -> list[str]:
    return sorted(expected(tee_dir, vector_id)["files"])


MISSING = [(d, v, slot) for d, v, _ in BASES if POSITIVES for slot in _slots(d, v)]


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id", "slot"), MISSING)
def test_missing_file_is_unreadable(
    tee_dir: str, vector_id: str, slot: str, tmp_path: Path
) -> None:
    """A missing input file exits 1 with InputUnreadable naming the file."""
    missing = str(tmp_path / "does-not-exist")
    code, out = _invoke(*_args(tee_dir, vector_id, **{slot: missing}))
    assert code == 1
    error_code, message = _error(out)
    assert error_code == "InputUnreadable"
    assert "does-not-exist" in message


@requires_evidence
def test_folder_as_input_is_unreadable(tmp_path: Path) -> None:
    """A folder where a file is expected exits 1 with InputUnreadable."""
    code, out = _invoke(*_args("nitro", "nitrite-prod", document=str(tmp_path)))
    assert code == 1
    assert _error(out)[0] == "InputUnreadable"


def test_oversized_input_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the input limit is rejected as malformed without being read whole."""
    big = tmp_path / "big.cbor"
    with big.open("wb") as fh:
        fh.truncate(MAX_INPUT_BYTES + 1)
    code, out = _invoke("nitro", str(big), "--at", "2024-09-07T14:37:39Z")
    assert code == 1
    error_code, message = _error(out)
    assert error_code == "EvidenceMalformed"
    assert "larger than" in message


@pytest.mark.parametrize("at", ["yesterday", "2025-09-01", "2025-09-01T00:00:00", ""])
def test_bad_time_is_rejected(at: str, tmp_path: Path) -> None:
    """--at must be an RFC 3339 time with an offset; anything else exits 1."""
    document = tmp_path / "doc.cbor"
    document.write_bytes(GARBAGE)
    code, out = _invoke("nitro", str(document), "--at", at)
    assert code == 1
    assert _error(out)[0] == "MalformedRequest"


def test_usage_errors_come_from_click() -> None:
    """A missing required option is a usage error (exit 2), not a verdict."""
    result = CliRunner().invoke(evidence, ["verify", "sev-snp", "report.bin"])
    assert result.exit_code == 2
    assert "--vcek" in result.output


def test_help_lists_every_tee() -> None:
    """``verify --help`` names the six commands."""
    result = CliRunner().invoke(evidence, ["verify", "--help"])
    assert result.exit_code == 0
    for name in ("sev-snp", "tdx", "sgx", "nitro", "az-snp-vtpm", "az-tdx-vtpm"):
        assert name in result.output


# -- roots -----------------------------------------------------------------------------------


@requires_evidence
def test_roots_folder_replaces_the_pinned_roots() -> None:
    """--roots with the corpus roots verifies like the pinned ones."""
    roots = str(vector_path("roots"))
    args = _args("sev-snp", "trustee-milan-vcek")
    code, out = _invoke(*args, "--roots", roots, "--at", _at("sev-snp", "trustee-milan-vcek"))
    assert code == 0
    assert out["verified"] is True


@requires_evidence
def test_foreign_roots_reject_genuine_evidence(tmp_path: Path) -> None:
    """With another CA pinned under the AMD names, a genuine report does not verify."""
    key = ec_key("foreign-root")
    pem = make_cert("Foreign Root", key).public_bytes(serialization.Encoding.PEM)
    for stem in ("amd-milan-ark", "amd-milan-ask"):
        (tmp_path / f"{stem}.pem").write_bytes(pem)
    args = _args("sev-snp", "trustee-milan-vcek")
    code, out = _invoke(*args, "--roots", str(tmp_path), "--at", "2025-09-01T00:00:00Z")
    assert code == 1
    assert _error(out)[0] in EVIDENCE_CODES


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_unusable_roots_folder_is_unreadable(kind: str, tmp_path: Path) -> None:
    """--roots naming no folder, or a folder without .pem files, exits 1 before verifying."""
    roots = tmp_path / "nothing-here" if kind == "missing" else tmp_path
    document = tmp_path / "doc.cbor"
    document.write_bytes(GARBAGE)
    code, out = _invoke("nitro", str(document), "--roots", str(roots))
    assert code == 1
    assert _error(out)[0] == "InputUnreadable"


# -- internal errors and start-up --------------------------------------------------------------


@requires_evidence
def test_unexpected_exception_is_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside a verifier exits 2 with InternalError and hides the exception text."""

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("detail that must not leak")

    monkeypatch.setattr(broker.evidence.snp, "verify_snp_report", explode)
    code, out = _invoke(*_args("sev-snp", "trustee-milan-vcek"))
    assert code == 2
    error_code, message = _error(out)
    assert error_code == "InternalError"
    assert "RuntimeError" in message
    assert "leak" not in message


def test_import_loads_no_verifier() -> None:
    """Importing the command loads no crypto or CBOR library: start-up stays fast."""
    code = (
        "import sys, broker.cli.evidence\n"
        "heavy = ('cryptography', 'dcap_qvl', 'cbor2', 'rfc8785')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy])"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_never_verify(data: bytes) -> None:
    """Arbitrary bytes as a report, quote or document exit 1 with an evidence error code."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input"
        path.write_bytes(data)
        for args in (
            ["nitro", str(path)],
            ["sev-snp", str(path), "--vcek", str(path)],
            ["tdx", str(path), "--collateral", str(path)],
            ["az-snp-vtpm", str(path)],
        ):
            code, out = _invoke(*args, "--at", "2025-09-01T00:00:00Z")
            assert code == 1
            assert _error(out)[0] in EVIDENCE_CODES


@requires_evidence
@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0, max_value=0x49F), mask=st.integers(1, 255))
def test_mutated_snp_report_never_verifies(position: int, mask: int) -> None:
    """Any one-byte change to a genuine SNP report makes the command exit 1."""
    report = bytearray(read_bytes("sev-snp", "trustee-milan-vcek.report.bin"))
    report[position] ^= mask
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.bin"
        path.write_bytes(bytes(report))
        args = _args("sev-snp", "trustee-milan-vcek", report=str(path))
        code, out = _invoke(*args, "--at", "2025-09-01T00:00:00Z")
    assert code == 1
    assert _error(out)[0] in EVIDENCE_CODES


# -- docs ------------------------------------------------------------------------------------

DOC = REPO_ROOT / "docs" / "evidence.md"


def test_docs_usage_matches_the_commands() -> None:
    """docs/evidence.md lists exactly the commands and options the CLI has."""
    usage = DOC.read_text().split("## Checking evidence offline", 1)[1].split("```")[1]
    documented = dict(re.findall(r"^broker evidence verify (\S+) (.*)$", usage, re.M))
    assert set(documented) == set(verify.commands)
    for name, command in verify.commands.items():
        assert isinstance(command, click.Command)
        options = {o for p in command.params for o in p.opts if o.startswith("--")}
        assert options - {"--roots"} == set(re.findall(r"--[a-z]+", documented[name])), name


@requires_evidence
def test_az_snp_vtpm_reads_the_vcek_option(tmp_path: Path) -> None:
    """az-snp-vtpm reads --vcek when given: a missing file is InputUnreadable."""
    args = _args("azure-vtpm", "az-snp-vtpm-v2")
    code, out = _invoke(*args, "--vcek", str(tmp_path / "absent.der"))
    assert code == 1
    assert _error(out)[0] == "InputUnreadable"
