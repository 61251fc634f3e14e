"""Evidence providers: how the enclave asks its hardware for evidence.

A provider turns the 64-byte REPORT_DATA the protocol requires into the
``primary_evidence`` JSON value for its TEE.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol


class EvidenceProvider(Protocol):
    tee: str

    async def evidence(self, report_data: bytes) -> Any: ...


class SampleProvider:
    """The simulated TEE (Trustee's sample format). Proves nothing; dev only."""

    tee = "sample"

    def __init__(
        self, *, svn: int = 1, measurement: str | None = None, debug: bool = False
    ) -> None:
        self._svn = svn
        self._measurement = measurement
        self._debug = debug

    async def evidence(self, report_data: bytes) -> Any:
        body: dict[str, Any] = {
            "svn": str(self._svn),
            "report_data": base64.b64encode(report_data).decode(),
        }
        if self._measurement is not None:
            body["measurement"] = self._measurement
        if self._debug:
            body["debug"] = True
        return body


PROVIDERS: dict[str, type[SampleProvider]] = {"sample": SampleProvider}
