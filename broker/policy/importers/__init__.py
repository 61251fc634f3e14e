"""Converting other brokers' key-release policies into ours.

    text, notes = IMPORTERS["azure-skr"](data, name="team-a", resources=("team-a/*/*",))

Each importer maps the claims it knows to ours and fails closed on the rest:
a condition it cannot translate becomes ``false`` (so the rule allows
nothing) with a note saying why; the notes go to the operator. Every
converted TEE also gets a deny rule on ``flags.debug``. The output is a
starting point for review, to be linted and tested like any policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.policy.importers._emit import PolicyImportError
from broker.policy.importers.azure_skr import convert as azure_skr_convert
from broker.policy.importers.ita_kbs import convert as ita_kbs_convert

__all__ = ["IMPORTERS", "PolicyImportError"]

Importer = Callable[..., tuple[str, tuple[str, ...]]]

IMPORTERS: dict[str, Importer] = {
    "azure-skr": azure_skr_convert,
    "ita-kbs": ita_kbs_convert,
}


def names() -> Sequence[str]:
    return tuple(IMPORTERS)
