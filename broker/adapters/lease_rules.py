"""What every Lease adapter shares: the rotation lease's name and the argument rules."""

from __future__ import annotations

from typing import Final

from broker.errors import ConfigError

__all__ = ["ROTATION_LEASE", "check_lease_args"]

# The scheduler's lease: one name, so replicas and workers contend for the same one.
ROTATION_LEASE: Final = "rotation-scheduler"


def check_lease_args(holder: str, ttl: float) -> None:
    """Raises: ConfigError for an empty holder or a ttl that is not positive."""
    if not holder:
        raise ConfigError("a lease holder needs a non-empty name")
    if not ttl > 0:
        raise ConfigError(f"a lease needs a positive ttl, not {ttl}")
