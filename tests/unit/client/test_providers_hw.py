"""Hardware evidence providers: configfs-tsm on a fake kernel, sev-guest and NSM ioctls on fakes."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import hashlib
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.client import hw_nsm, hw_sev_guest
from broker.client.hw_common import (
    SNP_REPORT_SIZE,
    VCEK_GUID,
    VLEK_GUID,
    EvidenceProviderError,
    parse_cert_table,
)
from broker.client.hw_nsm import NSM_IOCTL_REQUEST, NitroNSMProvider, NsmMessage
from broker.client.hw_sev_guest import (
    SNP_GET_EXT_REPORT,
    SevGuestProvider,
    SnpExtReportReq,
    SnpGuestRequestIoctl,
    SnpReportReq,
    SnpReportResp,
)
from broker.client.hw_tsm import ConfigfsIO, ConfigfsTSMProvider
from broker.client.providers_hw import HARDWARE_PROVIDERS
from broker.errors import MalformedRequest
from broker.evidence.model import TrustAnchors, VerifyContext
from broker.evidence.nitro import NitroVerifier
from broker.evidence.snp import SNPVerifier
from broker.evidence.tdx import TDXVerifier
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

REPORT_DATA = hashlib.sha384(b"runtime data").digest().ljust(64, b"\0")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")


def cert_table(certs: dict[uuid.UUID, bytes], *, pad: int = 0) -> bytes:
    """A GHCB certificate table: entries, an all-zero terminator, then the data."""
    header = 24 * (len(certs) + 1)
    entries, blobs, offset = b"", b"", header
    for guid, data in certs.items():
        entries += guid.bytes + struct.pack("<II", offset, len(data))
        blobs += data
        offset += len(data)
    return entries + bytes(24) + blobs + bytes(pad)


def fake_snp_report(report_data: bytes, *, signing_key: int = 0) -> bytes:
    report = bytearray(SNP_REPORT_SIZE)
    report[0:4] = (2).to_bytes(4, "little")
    report[0x48:0x4C] = (signing_key << 2).to_bytes(4, "little")
    report[0x50:0x90] = report_data
    return bytes(report)


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# --- configfs-tsm, with the test playing the kernel -----------------------------------


class FakeTSMKernel(ConfigfsIO):
    """Real file operations on a tmp tree plus what the kernel does behind them.

    mkdir creates the attributes, writes to inblob/privlevel bump ``generation``,
    reading outblob generates the report from inblob, and rmdir drops the
    attributes. ``races`` makes another writer touch the entry during that many
    outblob reads.
    """

    def __init__(
        self,
        provider: str,
        make_outblob: Callable[[bytes], bytes],
        *,
        auxblob: bytes | None = None,
        races: int = 0,
    ) -> None:
        self.provider = provider
        self.make_outblob = make_outblob
        self.auxblob = auxblob
        self.races = races
        self.created: list[Path] = []
        self.writes: list[tuple[str, bytes]] = []

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.created.append(path)
        for name in ("inblob", "outblob", "privlevel"):
            (path / name).write_bytes(b"")
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        if self.auxblob is not None:
            (path / "auxblob").write_bytes(b"")

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        self.writes.append((path.name, data))
        if path.name in ("inblob", "privlevel"):
            self._bump(path.parent)

    def read(self, path: Path, limit: int = 1 << 20) -> bytes:
        entry = path.parent
        if path.name == "outblob":
            (entry / "outblob").write_bytes(self.make_outblob((entry / "inblob").read_bytes()))
            if self.auxblob is not None:
                (entry / "auxblob").write_bytes(self.auxblob)
            if self.races:
                self.races -= 1
                self._bump(entry)
        return super().read(path, limit)

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)

    @staticmethod
    def _bump(entry: Path) -> None:
        gen = entry / "generation"
        gen.write_text(f"{int(gen.read_text()) + 1}\n")


def tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


async def test_tsm_snp_evidence_carries_report_and_vcek(tmp_path: Path) -> None:
    """SNP: outblob is the report with our REPORT_DATA; the VCEK comes from auxblob."""
    vcek = b"\x30\x82 vcek der"
    kernel = FakeTSMKernel(
        "sev_guest", fake_snp_report, auxblob=cert_table({ASK_GUID: b"ask", VCEK_GUID: vcek})
    )
    root = tsm_root(tmp_path)
    provider = ConfigfsTSMProvider("sev-snp", root, privlevel=1, fs=kernel)
    evidence = await provider.evidence(REPORT_DATA)
    assert set(evidence) == {"report", "vcek"}
    assert b64d(evidence["report"])[0x50:0x90] == REPORT_DATA
    assert b64d(evidence["vcek"]) == vcek
    assert kernel.writes == [("privlevel", b"1"), ("inblob", REPORT_DATA)]
    assert list(root.iterdir()) == []  # the entry was removed


async def test_tsm_snp_vlek_signed_report_sends_vlek(tmp_path: Path) -> None:
    """A VLEK-signed report (SIGNING_KEY 1) is paired with the VLEK entry."""
    kernel = FakeTSMKernel(
        "sev_guest",
        lambda rd: fake_snp_report(rd, signing_key=1),
        auxblob=cert_table({VCEK_GUID: b"vcek", VLEK_GUID: b"vlek"}),
    )
    evidence = await ConfigfsTSMProvider("sev-snp", tsm_root(tmp_path), fs=kernel).evidence(
        REPORT_DATA
    )
    assert b64d(evidence["vlek"]) == b"vlek"
    assert "vcek" not in evidence


async def test_tsm_snp_without_certificates_sends_report_only(tmp_path: Path) -> None:
    """No auxblob: the broker supplies the VCEK from its collateral source."""
    kernel = FakeTSMKernel("sev_guest", fake_snp_report)
    evidence = await ConfigfsTSMProvider("sev-snp", tsm_root(tmp_path), fs=kernel).evidence(
        REPORT_DATA
    )
    assert set(evidence) == {"report"}


async def test_tsm_tdx_evidence_is_the_quote(tmp_path: Path) -> None:
    """TDX: outblob is the quote, sent as {"quote": base64}; privlevel is never written."""
    kernel = FakeTSMKernel("tdx_guest", lambda rd: b"QUOTE" + rd)
    evidence = await ConfigfsTSMProvider("tdx", tsm_root(tmp_path), fs=kernel).evidence(REPORT_DATA)
    assert evidence == {"quote": base64.b64encode(b"QUOTE" + REPORT_DATA).decode()}
    assert [name for name, _ in kernel.writes] == ["inblob"]


async def test_tsm_generation_race_is_retried_in_a_fresh_entry(tmp_path: Path) -> None:
    """Another writer between write and read: the request is repeated and every entry removed."""
    kernel = FakeTSMKernel("tdx_guest", lambda rd: b"Q" + rd, races=1)
    root = tsm_root(tmp_path)
    evidence = await ConfigfsTSMProvider("tdx", root, fs=kernel).evidence(REPORT_DATA)
    assert b64d(evidence["quote"]) == b"Q" + REPORT_DATA
    assert len(kernel.created) == 2
    assert len(set(kernel.created)) == 2
    assert list(root.iterdir()) == []


async def test_tsm_persistent_race_fails_after_bounded_attempts(tmp_path: Path) -> None:
    """An entry that keeps changing is an error after `attempts` tries, not a loop."""
    kernel = FakeTSMKernel("tdx_guest", lambda rd: b"Q", races=100)
    root = tsm_root(tmp_path)
    with pytest.raises(EvidenceProviderError, match="concurrent"):
        await ConfigfsTSMProvider("tdx", root, attempts=3, fs=kernel).evidence(REPORT_DATA)
    assert len(kernel.created) == 3
    assert list(root.iterdir()) == []


async def test_tsm_wrong_provider_is_refused(tmp_path: Path) -> None:
    """A TDX guest asked for SNP evidence says so, and the entry is still removed."""
    root = tsm_root(tmp_path)
    kernel = FakeTSMKernel("tdx_guest", lambda rd: b"Q")
    with pytest.raises(EvidenceProviderError, match="tdx_guest"):
        await ConfigfsTSMProvider("sev-snp", root, fs=kernel).evidence(REPORT_DATA)
    assert list(root.iterdir()) == []


async def test_tsm_snp_outblob_of_wrong_size_is_refused(tmp_path: Path) -> None:
    """An outblob that is not a 1184-byte report never becomes evidence."""
    kernel = FakeTSMKernel("sev_guest", lambda rd: rd)
    with pytest.raises(EvidenceProviderError, match="1184"):
        await ConfigfsTSMProvider("sev-snp", tsm_root(tmp_path), fs=kernel).evidence(REPORT_DATA)


async def test_tsm_missing_configfs_is_provider_unavailable(tmp_path: Path) -> None:
    """Without configfs-tsm the error says so and carries the provider code."""
    provider = ConfigfsTSMProvider("tdx", tmp_path / "absent")
    with pytest.raises(EvidenceProviderError, match="not available") as info:
        await provider.evidence(REPORT_DATA)
    assert info.value.code == "EvidenceProviderUnavailable"


async def test_tsm_refuses_bad_report_data_and_options(tmp_path: Path) -> None:
    """REPORT_DATA is exactly 64 bytes; privlevel is an SNP VMPL."""
    with pytest.raises(MalformedRequest):
        await ConfigfsTSMProvider("tdx", tmp_path).evidence(b"short")
    with pytest.raises(ValueError, match="privlevel"):
        ConfigfsTSMProvider("tdx", tmp_path, privlevel=0)
    with pytest.raises(ValueError, match="privlevel"):
        ConfigfsTSMProvider("sev-snp", tmp_path, privlevel=4)


@requires_evidence
async def test_tsm_snp_evidence_form_verifies_with_real_report(tmp_path: Path) -> None:
    """A real report and VCEK delivered through configfs-tsm verify in SNPVerifier."""
    vector = "trustee-milan-vcek"
    report = read_bytes("sev-snp", f"{vector}.report.bin")
    table = cert_table({VCEK_GUID: read_bytes("sev-snp", f"{vector}.vcek.der")}, pad=100)
    kernel = FakeTSMKernel("sev_guest", lambda rd: report, auxblob=table)
    evidence = await ConfigfsTSMProvider("sev-snp", tsm_root(tmp_path), fs=kernel).evidence(
        REPORT_DATA
    )
    anchors = TrustAnchors(
        {n: read_bytes("roots", f"{n}.pem") for n in ("amd-milan-ark", "amd-milan-ask")}
    )
    now = parse_time(expected("sev-snp", vector)["verification_time"])
    claims = SNPVerifier().verify(evidence, VerifyContext(now=now, anchors=anchors))
    assert claims.tee == "sev-snp"


@requires_evidence
async def test_tsm_tdx_evidence_form_verifies_with_real_quote(tmp_path: Path) -> None:
    """A real TDX quote delivered through configfs-tsm verifies in TDXVerifier."""
    vector = "dcapqvl-tdx-uptodate"
    quote = read_bytes("tdx", f"{vector}.quote.bin")
    kernel = FakeTSMKernel("tdx_guest", lambda rd: quote)
    evidence = await ConfigfsTSMProvider("tdx", tsm_root(tmp_path), fs=kernel).evidence(REPORT_DATA)
    ctx = VerifyContext(
        now=parse_time(expected("tdx", vector)["verification_time"]),
        anchors=TrustAnchors({"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")}),
        collateral={"dcap": read_bytes("tdx", f"{vector}.collateral.json")},
    )
    assert TDXVerifier().verify(evidence, ctx).claims["tcb_status"] == "UpToDate"


# --- The GHCB certificate table ----------------------------------------------------------


def test_cert_table_parses_entries_by_guid() -> None:
    """Entries are found by GUID; trailing padding after the data is ignored."""
    table = cert_table({VCEK_GUID: b"v" * 10, ASK_GUID: b"a" * 3}, pad=4096)
    assert parse_cert_table(table) == {VCEK_GUID: b"v" * 10, ASK_GUID: b"a" * 3}
    assert parse_cert_table(bytes(4096)) == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (VCEK_GUID.bytes + struct.pack("<II", 48, 1), "not terminated"),
        (VCEK_GUID.bytes + struct.pack("<II", 48, 100) + bytes(24) + b"x", "out of bounds"),
        (VCEK_GUID.bytes + struct.pack("<II", 0, 8) + bytes(24), "out of bounds"),
        (VCEK_GUID.bytes + struct.pack("<II", 48, 0) + bytes(24), "out of bounds"),
        (
            (VCEK_GUID.bytes + struct.pack("<II", 72, 1)) * 2 + bytes(24) + b"x",
            "repeats",
        ),
    ],
)
def test_cert_table_refuses_malformed_tables(table: bytes, message: str) -> None:
    """The host's table is bounds-checked: unterminated, out of range, repeated entries."""
    with pytest.raises(EvidenceProviderError, match=message):
        parse_cert_table(table)


@given(st.binary(max_size=512))
def test_cert_table_raises_only_provider_error(data: bytes) -> None:
    """Arbitrary bytes parse or raise EvidenceProviderError, nothing else."""
    try:
        certs = parse_cert_table(data)
    except EvidenceProviderError:
        return
    assert all(len(v) > 0 for v in certs.values())


# --- /dev/sev-guest -----------------------------------------------------------------------


def test_sev_guest_structs_match_the_uapi_layout() -> None:
    """Struct sizes and the ioctl number match include/uapi/linux/sev-guest.h."""
    assert ctypes.sizeof(SnpReportReq) == 96
    assert ctypes.sizeof(SnpExtReportReq) == 112
    assert SnpExtReportReq.certs_len.offset == 104
    assert ctypes.sizeof(SnpReportResp) == 4000
    assert ctypes.sizeof(SnpGuestRequestIoctl) == 32
    assert SnpGuestRequestIoctl.req_data.offset == 8
    assert SnpGuestRequestIoctl.exitinfo2.offset == 24
    assert SNP_GET_EXT_REPORT == 0xC0205302


class FakeSnpFirmware:
    """Stands in for the driver: reads the request through its pointers, writes the answer."""

    def __init__(self, table: bytes, *, need: int = 0, status: int = 0) -> None:
        self.table = table
        self.need = need
        self.status = status
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, fd: int, request: int, arg: Any, mutate: bool) -> int:
        assert request == SNP_GET_EXT_REPORT and mutate
        guest = arg
        assert isinstance(guest, SnpGuestRequestIoctl) and guest.msg_version == 1
        req = SnpExtReportReq.from_address(guest.req_data)
        self.calls.append((req.data.vmpl, req.certs_len, len(self.calls)))
        if self.need and req.certs_len < self.need:
            req.certs_len = self.need
            guest.exitinfo2 = 1 << 32  # SNP_GUEST_VMM_ERR_INVALID_LEN
            raise OSError(errno.EIO, "Input/output error")
        report = fake_snp_report(bytes(req.data.user_data))
        header = struct.pack("<II", self.status, SNP_REPORT_SIZE) + bytes(24)
        ctypes.memmove(guest.resp_data, header + report, len(header) + len(report))
        ctypes.memmove(req.certs_address, self.table, len(self.table))
        return 0


def device(tmp_path: Path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


async def test_sev_guest_builds_request_and_reads_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REPORT_DATA and VMPL reach the firmware; report and VCEK come back as evidence."""
    firmware = FakeSnpFirmware(cert_table({VCEK_GUID: b"vcek-der"}))
    monkeypatch.setattr(hw_sev_guest, "_ioctl", firmware)
    evidence = await SevGuestProvider(device(tmp_path), vmpl=2).evidence(REPORT_DATA)
    assert b64d(evidence["report"])[0x50:0x90] == REPORT_DATA
    assert b64d(evidence["vcek"]) == b"vcek-der"
    assert firmware.calls == [(2, 0x4000, 0)]


async def test_sev_guest_grows_the_certificate_buffer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVALID_LEN: the request is repeated with the (page-rounded) size the host asks for."""
    firmware = FakeSnpFirmware(cert_table({VCEK_GUID: b"v"}), need=0x5001)
    monkeypatch.setattr(hw_sev_guest, "_ioctl", firmware)
    evidence = await SevGuestProvider(device(tmp_path)).evidence(REPORT_DATA)
    assert b64d(evidence["vcek"]) == b"v"
    assert [c[1] for c in firmware.calls] == [0x4000, 0x6000]


async def test_sev_guest_firmware_refusal_is_provider_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-zero MSG_REPORT_RSP status is an error, not a report."""
    monkeypatch.setattr(hw_sev_guest, "_ioctl", FakeSnpFirmware(bytes(24), status=0x16))
    with pytest.raises(EvidenceProviderError, match="status 0x16"):
        await SevGuestProvider(device(tmp_path)).evidence(REPORT_DATA)


async def test_sev_guest_ioctl_error_names_firmware_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other ioctl failures surface errno and the firmware/VMM error codes."""

    def failing(fd: int, request: int, arg: Any, mutate: bool) -> int:
        arg.exitinfo2 = 0x7
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(hw_sev_guest, "_ioctl", failing)
    with pytest.raises(EvidenceProviderError, match=r"EINVAL, firmware error 0x7"):
        await SevGuestProvider(device(tmp_path)).evidence(REPORT_DATA)


async def test_sev_guest_missing_device_is_provider_unavailable(tmp_path: Path) -> None:
    """No /dev/sev-guest: a clear EvidenceProviderError with the provider code."""
    with pytest.raises(EvidenceProviderError, match="no SEV-SNP guest device") as info:
        await SevGuestProvider(tmp_path / "sev-guest").evidence(REPORT_DATA)
    assert info.value.code == "EvidenceProviderUnavailable"
    with pytest.raises(ValueError, match="vmpl"):
        SevGuestProvider(vmpl=4)


# --- /dev/nsm ---------------------------------------------------------------------------------


def test_nsm_message_layout_and_ioctl_number() -> None:
    """nsm_message is two iovecs; the ioctl is _IOWR(0x0A, 0, struct nsm_message)."""
    assert ctypes.sizeof(NsmMessage) == 32
    assert NSM_IOCTL_REQUEST == 0xC0200A00


def test_nsm_request_binds_runtime_digest_as_user_data() -> None:
    """user_data is REPORT_DATA without padding (the SHA-384 digest); nonce stays empty."""
    request = cbor2.loads(hw_nsm.attestation_request(REPORT_DATA))
    assert request == {
        "Attestation": {"user_data": REPORT_DATA[:48], "nonce": None, "public_key": None}
    }
    with_key = cbor2.loads(hw_nsm.attestation_request(REPORT_DATA, public_key=b"k"))
    assert with_key["Attestation"]["public_key"] == b"k"


def test_nsm_request_refuses_unpadded_report_data() -> None:
    """REPORT_DATA that is not a zero-padded 48-byte digest is refused."""
    with pytest.raises(MalformedRequest):
        hw_nsm.attestation_request(b"\1" * 64)
    with pytest.raises(MalformedRequest):
        hw_nsm.attestation_request(REPORT_DATA[:48])


class FakeNsm:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[Any] = []

    def __call__(self, fd: int, request: int, arg: Any, mutate: bool) -> int:
        assert request == NSM_IOCTL_REQUEST and mutate
        message = arg
        self.requests.append(
            cbor2.loads(ctypes.string_at(message.request.iov_base, message.request.iov_len))
        )
        raw = cbor2.dumps(self.answer)
        assert len(raw) <= message.response.iov_len
        ctypes.memmove(message.response.iov_base, raw, len(raw))
        message.response.iov_len = len(raw)
        return 0


async def test_nsm_returns_the_attestation_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The document from the NSM answer becomes {"attestation_document": base64}."""
    nsm = FakeNsm({"Attestation": {"document": b"COSE"}})
    monkeypatch.setattr(hw_nsm, "_ioctl", nsm)
    (tmp_path / "nsm").write_bytes(b"")
    evidence = await NitroNSMProvider(tmp_path / "nsm").evidence(REPORT_DATA)
    assert evidence == {"attestation_document": base64.b64encode(b"COSE").decode()}
    assert nsm.requests[0]["Attestation"]["user_data"] == REPORT_DATA[:48]


async def test_nsm_error_answer_is_provider_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NSM Error answer is reported, not turned into evidence."""
    monkeypatch.setattr(hw_nsm, "_ioctl", FakeNsm({"Error": "InvalidArgument"}))
    (tmp_path / "nsm").write_bytes(b"")
    with pytest.raises(EvidenceProviderError, match="InvalidArgument"):
        await NitroNSMProvider(tmp_path / "nsm").evidence(REPORT_DATA)


async def test_nsm_missing_device_is_provider_unavailable(tmp_path: Path) -> None:
    """Outside an enclave there is no /dev/nsm: EvidenceProviderUnavailable."""
    with pytest.raises(EvidenceProviderError, match="Nitro Secure Module") as info:
        await NitroNSMProvider(tmp_path / "nsm").evidence(REPORT_DATA)
    assert info.value.code == "EvidenceProviderUnavailable"


@given(st.binary(max_size=256))
def test_nsm_response_parser_raises_only_provider_error(data: bytes) -> None:
    """Arbitrary NSM answers yield a document or EvidenceProviderError."""
    with contextlib.suppress(EvidenceProviderError):
        hw_nsm.parse_attestation_response(data)


@requires_evidence
async def test_nsm_evidence_form_verifies_with_real_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real attestation document delivered through the NSM verifies in NitroVerifier."""
    vector = "nitrite-prod"
    monkeypatch.setattr(
        hw_nsm,
        "_ioctl",
        FakeNsm({"Attestation": {"document": read_bytes("nitro", f"{vector}.cbor")}}),
    )
    (tmp_path / "nsm").write_bytes(b"")
    evidence = await NitroNSMProvider(tmp_path / "nsm").evidence(REPORT_DATA)
    root = "aws-nitro-enclaves-root-g1"
    ctx = VerifyContext(
        now=parse_time(expected("nitro", vector)["verification_time"]),
        anchors=TrustAnchors({root: read_bytes("roots", f"{root}.pem")}),
        max_age_seconds=10**9,
    )
    assert NitroVerifier().verify(evidence, ctx).tee == "nitro"


# --- Registry ---------------------------------------------------------------------------------


def test_registry_names_each_provider_with_its_tee() -> None:
    """Every registered factory builds a provider for the tee its name says."""
    tees = {name: factory().tee for name, factory in HARDWARE_PROVIDERS.items()}
    assert tees == {
        "sev-snp": "sev-snp",
        "sev-snp-tsm": "sev-snp",
        "sev-snp-ioctl": "sev-snp",
        "tdx": "tdx",
        "nitro": "nitro",
    }
