"""The broker's exception tree.

Every error carries a stable ``code`` (used in API error bodies, CLI output and
audit records) and the HTTP ``status`` the API answers with::

    BrokerError                      500 BrokerError
    ├── RequestError                 400 malformed input from a client
    │   ├── MalformedRequest         400
    │   ├── UnsupportedVersion       400
    │   ├── UnsupportedTEE           400 unknown tee, or a tee disabled by config
    │   ├── InvalidResourcePath      400
    │   ├── UnsupportedKey           400 tee-pubkey of an unknown or disallowed type
    │   └── BodyTooLarge             413
    ├── AuthError                    401
    │   ├── SessionMissing           401 no or unknown kbs-session-id
    │   ├── SessionExpired           401
    │   ├── TokenInvalid             401 bad signature, alg, issuer, expired token
    │   └── AdminAuthError           401 missing or unknown admin token
    ├── Forbidden                    403 admin role lacks the permission
    ├── EvidenceError                403 the evidence did not verify
    │   ├── EvidenceFormatError      403 malformed / oversized / unknown version
    │   ├── EvidenceSignatureError   403 bad signature or certificate chain
    │   ├── CollateralError          403 missing / stale / revoked endorsements
    │   └── FreshnessError           403 binding or timestamp mismatch
    ├── NonceReplayed                409 the challenge was already used
    ├── NonceExpired                 401 the challenge is older than its lifetime
    ├── ReleaseDenied                403 the policy said no (.reasons)
    ├── ResourceNotFound             404
    ├── KeyVersionNotReleasable      403 retired, or below the resource's min_release_version
    ├── KeyVersionDestroyed          410 the version's material was erased
    ├── Conflict                     409 admin write that clashes with state
    ├── PolicyError                  500 a policy document is invalid (.path, .line)
    ├── KeyManagementError           500
    │   └── UnwrapError              opaque, client side
    ├── BackendError                 503 a store, Vault, audit or collateral backend is down
    │   └── AuditWriteError          503 the audit record could not be made durable
    └── ConfigError                  start-up only

Messages never contain key material: callers pass identifiers, never values.
"""

from __future__ import annotations

from collections.abc import Sequence


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    code: str = "BrokerError"
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def diagnostics(self) -> str:
        """A human-readable line for CLI output and logs."""
        return f"{self.code}: {self.message}"


class RequestError(BrokerError):
    code = "MalformedRequest"
    status = 400


class MalformedRequest(RequestError):
    code = "MalformedRequest"


class UnsupportedVersion(RequestError):
    code = "UnsupportedVersion"


class UnsupportedTEE(RequestError):
    code = "UnsupportedTEE"


class InvalidResourcePath(RequestError):
    code = "InvalidResourcePath"


class UnsupportedKey(RequestError):
    code = "UnsupportedKey"


class BodyTooLarge(RequestError):
    code = "BodyTooLarge"
    status = 413


class AuthError(BrokerError):
    code = "Unauthorized"
    status = 401


class SessionMissing(AuthError):
    code = "SessionMissing"


class SessionExpired(AuthError):
    code = "SessionExpired"


class TokenInvalid(AuthError):
    code = "TokenInvalid"


class AdminAuthError(AuthError):
    code = "AdminUnauthorized"


class Forbidden(BrokerError):
    code = "Forbidden"
    status = 403


class EvidenceError(BrokerError):
    code = "EvidenceInvalid"
    status = 403


class EvidenceFormatError(EvidenceError):
    code = "EvidenceMalformed"


class EvidenceSignatureError(EvidenceError):
    code = "EvidenceSignatureInvalid"


class CollateralError(EvidenceError):
    code = "CollateralInvalid"


class FreshnessError(EvidenceError):
    code = "EvidenceNotFresh"


class NonceReplayed(BrokerError):
    code = "NonceReplayed"
    status = 409


class NonceExpired(AuthError):
    code = "NonceExpired"


class ReleaseDenied(BrokerError):
    """The evidence verified but no policy rule allowed the release."""

    code = "PolicyDenied"
    status = 403

    def __init__(self, message: str, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


class ResourceNotFound(BrokerError):
    code = "ResourceNotFound"
    status = 404


class KeyVersionNotReleasable(BrokerError):
    code = "KeyVersionNotReleasable"
    status = 403


class KeyVersionDestroyed(BrokerError):
    code = "KeyVersionDestroyed"
    status = 410


class Conflict(BrokerError):
    code = "Conflict"
    status = 409


class PolicyError(BrokerError):
    """A policy or reference-value document is invalid."""

    code = "PolicyInvalid"
    status = 500

    def __init__(self, message: str, *, path: str = "", line: int = 0, col: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.col = col

    def diagnostics(self) -> str:
        where = self.path
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        return f"{where}: {self.message}" if where else self.message


class KeyManagementError(BrokerError):
    code = "KeyManagementError"


class UnwrapError(KeyManagementError):
    """One opaque error for every failure to open a wrapped key."""

    code = "UnwrapFailed"

    def __init__(self, message: str = "could not unwrap the released key") -> None:
        super().__init__(message)


class BackendError(BrokerError):
    code = "BackendUnavailable"
    status = 503

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class AuditWriteError(BackendError):
    code = "AuditUnavailable"


class ConfigError(BrokerError):
    code = "ConfigInvalid"
