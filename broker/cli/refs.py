"""``broker refs``: reference values with provenance.

    broker refs add NAME [VALUE] [--from-evidence FILE --tee TEE [--at T]
                   [--collateral F] [--vcek F] [--claim PATH]] [--file refs/x.yaml]
                   [--added-by WHO] [--source TEXT] [--description TEXT]
    broker refs snp-measure --ovmf FILE [--kernel F --initrd F --append TEXT]
                   --vcpus N --vcpu-type EPYC-Milan [--vmm-type QEMU] [--guest-features HEX]

``add`` with ``--from-evidence`` verifies the evidence first and takes the
TEE's measurement claim from it (``--claim`` picks another, e.g. ``pcrs.4``);
a VALUE given as well must equal it. The value is written to the refs file
with a comment naming the evidence digest, the verification time and who
added it, and the set's version is bumped.
"""

from __future__ import annotations

import getpass
import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker.errors import BrokerError
from broker.policy.evidence_files import EvidenceFiles, verify_files
from broker.policy.refs_edit import Provenance, add_value
from broker.policy.schema import MEASUREMENT_CLAIM, claim_at

_FILE = click.Path(dir_okay=False, path_type=Path)
SNP_MEASURE_PACKAGE = "sev-snp-measure"


@click.group(name="refs")
def refs() -> None:
    """Manage reference values (policies/refs/*.yaml)."""


@refs.command(name="add")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--file", "refs_file", type=_FILE, default=None, help="Refs file to edit.")
@click.option("--from-evidence", "evidence", type=_FILE, default=None)
@click.option("--tee", default=None, help="TEE of --from-evidence.")
@click.option("--at", default=None, help="Verification time, RFC 3339 (default: now).")
@click.option("--collateral", type=_FILE, default=None)
@click.option("--vcek", type=_FILE, default=None)
@click.option("--claim", default=None, help="Claim path to take (default: the measurement).")
@click.option("--added-by", default=None, help="Who vouches for the value (default: $USER).")
@click.option("--source", "source_text", default=None, help="Where the value comes from.")
@click.option("--description", default="", help="Description of a new set.")
def add(
    name: str,
    value: str | None,
    refs_file: Path | None,
    evidence: Path | None,
    tee: str | None,
    at: str | None,
    collateral: Path | None,
    vcek: Path | None,
    claim: str | None,
    added_by: str | None,
    source_text: str | None,
    description: str,
) -> None:
    """Add VALUE (or the measurement of a verified piece of evidence) to set NAME."""
    now = _time(at)
    target = refs_file or Path("policies") / "refs" / f"{name.replace('_', '-')}.yaml"
    try:
        if evidence is not None:
            if tee is None:
                raise click.UsageError("--from-evidence needs --tee")
            verified = verify_files(EvidenceFiles(tee, evidence, now, collateral, vcek))
            path = tuple(claim.split(".")) if claim else MEASUREMENT_CLAIM.get(verified.tee, ())
            try:
                found: Any = claim_at(verified.claims, path)
            except KeyError:
                raise click.ClickException(f"the evidence has no claim {'.'.join(path)}") from None
            if not isinstance(found, str | int) or isinstance(found, bool):
                raise click.ClickException(f"claim {'.'.join(path)} is not a text or number")
            if value is not None and str(found) != value.lower():
                raise click.ClickException(
                    f"VALUE does not match the evidence's {'.'.join(path)} ({found})"
                )
            new_value: str | int = found
            source = (
                f"{verified.evidence_digest} ({verified.tee}, claims.{'.'.join(path)}, "
                f"verified at {now.isoformat()})"
            )
        elif value is not None and source_text:
            new_value, source = value.lower(), source_text
        else:
            raise click.UsageError("give --from-evidence, or VALUE with --source")
        old = target.read_text(encoding="utf-8") if target.is_file() else ""
        text = add_value(
            old,
            name,
            new_value,
            provenance=Provenance(
                source_text or source, added_by or getpass.getuser(), description
            ),
            now=now,
            path=str(target),
        )
    except BrokerError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        raise SystemExit(1) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    click.echo(f"added {new_value} to {name} in {target}")


@refs.command(name="snp-measure")
@click.option("--ovmf", type=_FILE, required=True, help="OVMF firmware image.")
@click.option("--kernel", type=_FILE, default=None)
@click.option("--initrd", type=_FILE, default=None)
@click.option("--append", default=None, help="Kernel command line.")
@click.option("--vcpus", type=click.IntRange(1, 512), required=True)
@click.option("--vcpu-type", required=True, help="e.g. EPYC-Milan, EPYC-Genoa, EPYC-Turin.")
@click.option("--vmm-type", type=click.Choice(["QEMU", "ec2", "gce"]), default="QEMU")
@click.option("--guest-features", default="0x1", show_default=True, help="SEV features (hex).")
def snp_measure(
    ovmf: Path,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
    vcpus: int,
    vcpu_type: str,
    vmm_type: str,
    guest_features: str,
) -> None:
    """Print the SEV-SNP launch MEASUREMENT (hex) of a guest, via sev-snp-measure."""
    if (initrd is not None or append is not None) and kernel is None:
        raise click.UsageError("--initrd and --append need --kernel")
    try:
        features = int(guest_features, 16)
    except ValueError:
        raise click.BadParameter("--guest-features must be hex, e.g. 0x1") from None
    digest = compute_snp_measurement(
        ovmf=ovmf,
        kernel=kernel,
        initrd=initrd,
        append=append,
        vcpus=vcpus,
        vcpu_type=vcpu_type,
        vmm_type=vmm_type,
        guest_features=features,
    )
    click.echo(digest)


def compute_snp_measurement(
    *,
    ovmf: Path,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
    vcpus: int,
    vcpu_type: str,
    vmm_type: str,
    guest_features: int,
) -> str:
    """The launch digest as lower-case hex, as policies compare it."""
    try:
        guest = importlib.import_module("sevsnpmeasure.guest")
        sev_mode = importlib.import_module("sevsnpmeasure.sev_mode")
        vcpu_types = importlib.import_module("sevsnpmeasure.vcpu_types")
        vmm_types = importlib.import_module("sevsnpmeasure.vmm_types")
    except ModuleNotFoundError:
        raise click.ClickException(
            f"snp-measure needs the {SNP_MEASURE_PACKAGE} package "
            f"(pip install {SNP_MEASURE_PACKAGE})"
        ) from None
    if vcpu_type not in vcpu_types.CPU_SIGS:
        known = ", ".join(sorted(vcpu_types.CPU_SIGS))
        raise click.BadParameter(f"unknown --vcpu-type {vcpu_type!r} (one of {known})")
    try:
        digest: bytes = guest.calc_launch_digest(
            sev_mode.SevMode.SEV_SNP,
            vcpus,
            vcpu_types.CPU_SIGS[vcpu_type],
            str(ovmf),
            str(kernel) if kernel else None,
            str(initrd) if initrd else None,
            append,
            guest_features,
            vmm_type=vmm_types.VMMType[vmm_type],
        )
    # The package raises ValueError, RuntimeError, struct.error, OSError ... on
    # firmware it cannot parse; each one means "cannot measure this image".
    except Exception as exc:  # noqa: BLE001
        raise click.ClickException(
            f"cannot compute the measurement: {type(exc).__name__}: {exc}"
        ) from None
    return digest.hex()


def _time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"--at {text[:40]!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise click.BadParameter("--at needs a UTC offset (append Z)")
    return when
