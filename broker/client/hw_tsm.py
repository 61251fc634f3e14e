"""SEV-SNP and TDX evidence through the Linux configfs-tsm report interface.

    provider = ConfigfsTSMProvider("tdx")
    evidence = await provider.evidence(report_data)   # {"quote": <base64>}

Interface (Linux ``Documentation/ABI/testing/configfs-tsm``, kernel 6.7+):
``mkdir <root>/<name>`` creates a report entry with the attributes
``inblob`` (write: up to 64 bytes of REPORT_DATA), ``privlevel`` (write: the
SNP VMPL), ``outblob`` (read: the report or quote, generated on read),
``auxblob`` (read: for SNP, the host's certificate table), ``provider``
(read: ``sev_guest`` or ``tdx_guest``) and ``generation`` (read: bumped on
every write). Another process may write to the same entry between our write
and our read; the generation number detects that, and the request is then
made again in a fresh entry. The entry is removed with ``rmdir``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from broker.client.hw_common import (
    EvidenceProviderError,
    b64,
    check_report_data,
    snp_evidence,
)

__all__ = ["TSM_REPORT_ROOT", "ConfigfsIO", "ConfigfsTSMProvider"]

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
MAX_BLOB = 1 << 20
_PROVIDER = {"sev-snp": "sev_guest", "tdx": "tdx_guest"}
_MAX_VMPL = 3


class ConfigfsIO:
    """The file operations the provider performs on configfs.

    Kept apart so that tests can stand in for the kernel behind them; the
    provider itself never touches the file system another way.
    """

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        # configfs binary attributes take the value on close; no O_CREAT, the
        # kernel created the attribute with the entry.
        fd = os.open(path, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def read(self, path: Path, limit: int = MAX_BLOB) -> bytes:
        with path.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise EvidenceProviderError(f"configfs-tsm {path.name} exceeds {limit} bytes")
        return data


class ConfigfsTSMProvider:
    """Evidence from configfs-tsm for ``tee`` ``sev-snp`` or ``tdx``.

    ``privlevel`` (SNP only) is the VMPL the report is requested at; None
    leaves the kernel's default. ``attempts`` bounds the retries after a
    concurrent writer changed the entry.
    """

    def __init__(
        self,
        tee: Literal["sev-snp", "tdx"],
        root: Path = TSM_REPORT_ROOT,
        *,
        privlevel: int | None = None,
        attempts: int = 3,
        fs: ConfigfsIO | None = None,
    ) -> None:
        if tee not in _PROVIDER:
            raise ValueError(f"configfs-tsm provides sev-snp or tdx evidence, not {tee!r}")
        if privlevel is not None and (tee != "sev-snp" or not 0 <= privlevel <= _MAX_VMPL):
            raise ValueError("privlevel is an SNP VMPL from 0 to 3")
        self.tee: str = tee
        self._root = Path(root)
        self._privlevel = privlevel
        self._attempts = max(1, attempts)
        self._fs = fs or ConfigfsIO()

    async def evidence(self, report_data: bytes) -> Any:
        """The primary_evidence for this TEE, bound to ``report_data``.

        Raises:
            MalformedRequest: ``report_data`` is not 64 bytes.
            EvidenceProviderError: no configfs-tsm, another TSM, a refused
                request, a malformed answer, or entries that kept changing.
        """
        data = check_report_data(report_data)
        outblob, auxblob = await asyncio.to_thread(self._request, data)
        if self.tee == "sev-snp":
            return snp_evidence(outblob, auxblob)
        if not outblob:
            raise EvidenceProviderError("configfs-tsm returned an empty TDX quote")
        return {"quote": b64(outblob)}

    def _request(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        for _ in range(self._attempts):
            entry = self._root / f"broker-{secrets.token_hex(8)}"
            self._create(entry)
            try:
                result = self._round_trip(entry, report_data)
            finally:
                self._remove(entry)
            if result is not None:
                return result
        raise EvidenceProviderError(
            f"configfs-tsm report changed under us {self._attempts} times (concurrent writers)"
        )

    def _create(self, entry: Path) -> None:
        try:
            self._fs.mkdir(entry)
        except FileNotFoundError:
            raise EvidenceProviderError(
                f"configfs-tsm is not available at {self._root} (kernel 6.7+ with a TSM driver)"
            ) from None
        except OSError as exc:
            raise EvidenceProviderError(
                f"cannot create a configfs-tsm report entry under {self._root}: {exc.strerror}"
            ) from None

    def _remove(self, entry: Path) -> None:
        try:
            self._fs.rmdir(entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EvidenceProviderError(
                f"cannot remove configfs-tsm entry {entry.name}: {exc.strerror}"
            ) from None

    def _round_trip(self, entry: Path, report_data: bytes) -> tuple[bytes, bytes | None] | None:
        """One request in a fresh entry; None if another writer intervened."""
        try:
            provider = self._fs.read(entry / "provider", 64).decode("ascii", "replace").strip()
            if provider != _PROVIDER[self.tee]:
                raise EvidenceProviderError(
                    f"configfs-tsm provider is {provider[:32]!r}, not {_PROVIDER[self.tee]!r}"
                )
            if self._privlevel is not None:
                self._fs.write(entry / "privlevel", str(self._privlevel).encode())
            self._fs.write(entry / "inblob", report_data)
            generation = self._generation(entry)
            outblob = self._fs.read(entry / "outblob")
            auxblob = self._auxblob(entry) if self.tee == "sev-snp" else None
            if self._generation(entry) != generation:
                return None
        except OSError as exc:
            raise EvidenceProviderError(
                f"configfs-tsm request failed: {errno.errorcode.get(exc.errno or 0, 'error')} "
                f"({exc.strerror})"
            ) from None
        return outblob, auxblob

    def _generation(self, entry: Path) -> int:
        text = self._fs.read(entry / "generation", 32).strip()
        if not text.isdigit():
            raise EvidenceProviderError("configfs-tsm generation is not a number")
        return int(text)

    def _auxblob(self, entry: Path) -> bytes | None:
        try:
            return self._fs.read(entry / "auxblob") or None
        except FileNotFoundError:
            return None  # an older kernel, or a host that supplies no certificates
