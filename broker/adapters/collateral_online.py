"""Collateral straight from the vendors: AMD KDS (VCEKs) and Intel PCS v4 (DCAP).

    online = OnlineCollateral(aiohttp.ClientSession, timeout=10.0)
    source = CachedCollateral(cache_dir, max_age=timedelta(hours=12), upstream=online)

Off by default: only configuration that names it wires it in, normally as the
``upstream`` of a ``CachedCollateral``. It is an I/O adapter that the service
calls before verification; verifiers never reach it. Every request has an
explicit timeout and a bounded number of attempts; only transport failures,
HTTP 429 and 5xx are retried. Redirects are not followed.

Endpoints (AMD publication 57230, "KDS Interface"; Intel "PCS API v4")::

    GET {kds}/vcek/v1/{product}/{hwid}?blSPL=&teeSPL=&snpSPL=&ucodeSPL=[&fmcSPL=]
    GET {pcs}/{sgx|tdx}/certification/v4/tcb?fmspc=
    GET {pcs}/{sgx|tdx}/certification/v4/qe/identity
    GET {pcs}/sgx/certification/v4/pckcrl?ca={processor|platform}&encoding=der
    GET {root_crl}                                  (Intel SGX Root CA CRL)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from urllib.parse import urlencode

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from broker.adapters.collateral import CollateralRequest, check_vcek
from broker.adapters.collateral_pcs import PCSResponse, assemble_dcap_collateral
from broker.errors import BackendError, CollateralError
from broker.evidence.snp import Product, decode_tcb

__all__ = ["AMD_KDS_URL", "INTEL_PCS_URL", "INTEL_ROOT_CRL_URL", "OnlineCollateral"]

AMD_KDS_URL = "https://kdsintf.amd.com"
INTEL_PCS_URL = "https://api.trustedservices.intel.com"
# The CRL distribution point named in the Intel SGX Root CA certificate.
INTEL_ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

MAX_RESPONSE_BYTES = 1 << 20
_HWID_BYTES = {Product.MILAN: 64, Product.GENOA: 64, Product.TURIN: 8}
_ISSUER_HEADERS = (
    "SGX-PCK-CRL-Issuer-Chain",
    "TCB-Info-Issuer-Chain",
    "SGX-TCB-Info-Issuer-Chain",
    "SGX-Enclave-Identity-Issuer-Chain",
    "Enclave-Identity-Issuer-Chain",
)
_HTTP_OK, _HTTP_BAD_REQUEST, _HTTP_NOT_FOUND = 200, 400, 404
_HTTP_TOO_MANY, _HTTP_SERVER_ERROR = 429, 500


class _Retryable(Exception):
    """A failure worth another attempt: transport error, 429 or 5xx."""


class OnlineCollateral:
    """Fetches collateral over HTTPS with ``session_factory()``'s session.

    ``attempts`` bounds the tries per document; ``backoff`` is the first
    wait in seconds, doubled per retry. The session is created on first use
    and closed by ``close()`` (or ``async with``).
    """

    def __init__(
        self,
        session_factory: Callable[[], aiohttp.ClientSession],
        *,
        amd_kds_url: str = AMD_KDS_URL,
        intel_pcs_url: str = INTEL_PCS_URL,
        intel_root_crl_url: str = INTEL_ROOT_CRL_URL,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if attempts < 1 or timeout <= 0:
            raise ValueError("attempts must be >= 1 and timeout > 0")
        self._factory = session_factory
        self._kds = amd_kds_url.rstrip("/")
        self._pcs = intel_pcs_url.rstrip("/")
        self._root_crl = intel_root_crl_url
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._attempts = attempts
        self._backoff = backoff
        self._limit = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OnlineCollateral:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, req: CollateralRequest) -> Mapping[str, bytes]:
        """Raises CollateralError (404, malformed answer) or BackendError."""
        if req.tee == "sev-snp":
            return {"vcek": await self._vcek(req)}
        return {"dcap": await self._dcap(req)}

    # --- AMD KDS ----------------------------------------------------------------

    def vcek_url(self, req: CollateralRequest) -> str:
        """The KDS URL of the VCEK that certifies ``req``'s chip at its TCB."""
        product = Product(req.product)
        tcb = decode_tcb(bytes.fromhex(req.reported_tcb), product)
        hwid = req.chip_id[: 2 * _HWID_BYTES[product]]
        params = {"blSPL": tcb.bootloader, "teeSPL": tcb.tee, "snpSPL": tcb.snp}
        params["ucodeSPL"] = tcb.microcode
        if tcb.fmc is not None:
            params["fmcSPL"] = tcb.fmc
        return f"{self._kds}/vcek/v1/{product.value}/{hwid}?{urlencode(params)}"

    async def _vcek(self, req: CollateralRequest) -> bytes:
        response = await self._get(self.vcek_url(req), "AMD KDS VCEK")
        check_vcek(response.body)
        return response.body

    # --- Intel PCS --------------------------------------------------------------

    def dcap_urls(self, req: CollateralRequest) -> dict[str, str]:
        """The four PCS URLs whose answers make up ``req``'s collateral."""
        base = f"{self._pcs}/{req.tee}/certification/v4"
        return {
            "tcb": f"{base}/tcb?{urlencode({'fmspc': req.fmspc.upper()})}",
            "qe_identity": f"{base}/qe/identity",
            "pck_crl": f"{self._pcs}/sgx/certification/v4/pckcrl?"
            + urlencode({"ca": req.ca, "encoding": "der"}),
            "root_crl": self._root_crl,
        }

    async def _dcap(self, req: CollateralRequest) -> bytes:
        urls = self.dcap_urls(req)
        # Sequential on purpose: four small documents, and a failure stops the rest.
        answers = {name: await self._get(url, f"Intel PCS {name}") for name, url in urls.items()}
        return assemble_dcap_collateral(**answers)

    # --- HTTP -------------------------------------------------------------------

    async def _get(self, url: str, what: str) -> PCSResponse:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff, max=max(self._backoff * 8, 0.0)),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            return await retrying(self._get_once, url, what)
        except _Retryable as exc:
            raise BackendError(
                f"{what} unavailable after {self._attempts} attempts: {exc}"
            ) from None

    async def _get_once(self, url: str, what: str) -> PCSResponse:
        if self._session is None:
            self._session = self._factory()
        try:
            async with self._session.get(url, timeout=self._timeout, allow_redirects=False) as resp:
                self._check_status(resp.status, what)
                body = await self._read(resp, what)
                headers = {
                    name.lower(): resp.headers[name]
                    for name in _ISSUER_HEADERS
                    if name in resp.headers
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(type(exc).__name__) from None
        return PCSResponse(headers=headers, body=body)

    @staticmethod
    def _check_status(status: int, what: str) -> None:
        if status == _HTTP_OK:
            return
        if status == _HTTP_TOO_MANY or status >= _HTTP_SERVER_ERROR:
            raise _Retryable(f"HTTP {status}")
        if status in (_HTTP_BAD_REQUEST, _HTTP_NOT_FOUND):
            # The vendor does not know this chip/TCB or FMSPC: no such collateral.
            raise CollateralError(f"{what}: upstream answered HTTP {status}")
        # 3xx, 401, 403 ...: a configuration or access problem, not missing collateral.
        raise BackendError(f"{what}: unexpected HTTP {status}", retryable=False)

    async def _read(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        if (resp.content_length or 0) > self._limit:
            raise CollateralError(f"{what}: answer larger than {self._limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._limit:
                raise CollateralError(f"{what}: answer larger than {self._limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
