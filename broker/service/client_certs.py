"""Verified client certificates mapped to admin roles (``admin.client_cert_roles``).

The TLS layer has already verified the chain to the configured client CA;
what arrives here is the decoded subject of that verified certificate (the
``peercert`` dict of Python's ``ssl``). A rule such as ``"CN=ops-team,O=Example"``
matches when the subject holds every listed attribute with that exact value.
A subject matched by rules naming different roles is refused (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.errors import AdminAuthError, ConfigError

# ssl's long attribute names -> the RFC 4514 short names operators write.
_SHORT: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
    "emailAddress": "emailAddress",
    "serialNumber": "serialNumber",
    "userId": "UID",
}
_KNOWN: Final = frozenset(_SHORT.values())


@dataclass(frozen=True, slots=True)
class CertRule:
    text: str
    attributes: frozenset[tuple[str, str]]
    role: str


def _parse_rule(text: str, role: str) -> CertRule:
    pairs: set[tuple[str, str]] = set()
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in _KNOWN or not value.strip():
            raise ConfigError(
                f"admin.client_cert_roles: {text!r} must look like 'CN=name,O=org'"
                f" (attributes {sorted(_KNOWN)})"
            )
        pairs.add((name, value.strip()))
    return CertRule(text=text, attributes=frozenset(pairs), role=role)


def subject_attributes(peercert: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """``peercert["subject"]`` (a tuple of RDNs of (name, value) pairs) as short-name pairs."""
    pairs: set[tuple[str, str]] = set()
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            pairs.add((_SHORT.get(str(name), str(name)), str(value)))
    return frozenset(pairs)


@dataclass(frozen=True, slots=True)
class CertRoleMap:
    rules: tuple[CertRule, ...]

    @classmethod
    def parse(cls, table: Mapping[str, str], *, roles: frozenset[str]) -> CertRoleMap:
        """Raises ConfigError naming a malformed rule or an unknown role."""
        rules = []
        for text, role in table.items():
            if role not in roles:
                raise ConfigError(f"admin.client_cert_roles: unknown role {role!r} for {text!r}")
            rules.append(_parse_rule(text, role))
        return cls(tuple(rules))

    def role_for(self, peercert: Mapping[str, Any]) -> tuple[str, str]:
        """(the matching rule, its role) for a verified certificate.

        Raises:
            AdminAuthError: no rule matches, or rules naming different roles do.
        """
        subject = subject_attributes(peercert)
        matched = [rule for rule in self.rules if rule.attributes <= subject]
        roles = {rule.role for rule in matched}
        if not matched:
            raise AdminAuthError("client certificate is not mapped to an admin role")
        if len(roles) > 1:
            raise AdminAuthError("client certificate matches rules for different roles")
        return min(rule.text for rule in matched), matched[0].role
