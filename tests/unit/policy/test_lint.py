"""Lint: every error, and the warnings security teams rely on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from broker.cli.policy import policy as policy_group
from broker.policy.lint import lint_dir, lint_texts
from tests.unit.policy.conftest import NOW, REFS, doc

SNP = doc(
    """
    version: 1
    name: snp
    resources: ["snp/*/*"]
    rules:
      - name: no-debug
        tee: sev-snp
        effect: deny
        when: [flags.debug]
      - name: listed
        tee: sev-snp
        when:
          - claims.measurement in refs.good_measurements
          - claims.reported_tcb.snp >= 8
    """
)


def _messages(files: dict[str, bytes], *, now: object = NOW) -> list[str]:
    return [d.format() for d in lint_texts(files, now=NOW if now is NOW else now)]  # type: ignore[arg-type]


def test_clean_policy_has_no_findings() -> None:
    """A policy that pins a measurement and refuses debug lints clean."""
    assert _messages({"snp.yaml": SNP, "refs/r.yaml": REFS}) == []


def test_reports_every_error_not_only_the_first() -> None:
    """Lint keeps going after the first error, across rules and files."""
    broken = SNP.replace(b"tee: sev-snp\n    effect", b"tee: snp\n    effect").replace(
        b"refs.good_measurements", b"refs.nope"
    )
    messages = _messages({"snp.yaml": broken, "other.yaml": b"- 1\n", "refs/r.yaml": REFS})
    errors = [m for m in messages if ": error: " in m]
    assert errors == [
        "other.yaml:1:1: error: policy must be a mapping",
        "snp.yaml:6:10: error: rules[0].tee: unknown TEE 'snp' (expected one of az-snp-vtpm, "
        "az-tdx-vtpm, nitro, sample, sev-snp, sgx, tdx)",
        "snp.yaml:12:9: error: rules[1].when[0]: no reference set named 'nope' in refs/",
    ]


def test_warns_without_measurement_condition() -> None:
    """An allow rule that pins no measurement-like claim is flagged."""
    text = SNP.replace(b"claims.measurement in refs.good_measurements", b"claims.vmpl == 0")
    messages = _messages({"snp.yaml": text, "refs/r.yaml": REFS})
    expected = (
        "snp.yaml:9:5: warning: rule 'listed' allows sev-snp without a condition on a measurement"
    )
    assert any(m.startswith(expected) for m in messages)


def test_warns_when_debug_not_refused() -> None:
    """A TEE with a debug mode must have debug refused somewhere."""
    text = SNP.replace(b"when: [flags.debug]", b"when: [claims.vmpl != 0]")
    messages = _messages({"snp.yaml": text, "refs/r.yaml": REFS})
    assert messages == [
        "snp.yaml:9:5: warning: debug sev-snp guests are not refused: "
        "add a deny rule on flags.debug"
    ]


def test_warns_sample_tee_and_catch_all_glob() -> None:
    """Allowing the sample TEE and a */*/* glob are both flagged."""
    text = doc(
        """
        version: 1
        resources: ["*/*/*"]
        rules:
          - name: dev
            tee: sample
            when: ["claims.svn >= 1"]
        """
    )
    assert _messages({"dev.yaml": text}) == [
        "dev.yaml:2:14: warning: resource glob */*/* governs every resource",
        "dev.yaml:4:5: warning: rule 'dev' allows the sample TEE, "
        "which has no hardware root of trust, in a policy not marked environment: dev",
    ]
    marked = text.replace(b"version: 1\n", b"version: 1\nenvironment: dev\n")
    assert not any("sample TEE" in m for m in _messages({"dev.yaml": marked}))


def test_warns_on_refs_problems() -> None:
    """Empty, expired, soon-expiring, upper-case and unused reference sets are flagged."""
    refs = doc(
        """
        version: 1
        refs:
          good_measurements:
            description: d
            source: s
            added_by: a
            expires: 2026-01-20T00:00:00Z
            values: ["AABBCCDDEEFF00112233"]
          old:
            description: d
            source: s
            added_by: a
            expires: 2025-01-01T00:00:00Z
            values: []
        """
    )
    messages = _messages({"snp.yaml": SNP, "refs/r.yaml": refs})
    assert messages == [
        "refs/r.yaml:3:3: warning: reference set 'good_measurements' expires at "
        "2026-01-20T00:00:00+00:00 (within 30 days)",
        "refs/r.yaml:3:3: warning: reference set 'good_measurements' holds upper-case hex "
        "AABBCCDDEEFF0011...: claims are lower-case, so it can never match",
        "refs/r.yaml:9:3: warning: reference set 'old' is empty",
        "refs/r.yaml:9:3: warning: reference set 'old' expired at 2025-01-01T00:00:00+00:00: "
        "it matches nothing",
        "refs/r.yaml:9:3: warning: reference set 'old' is not used",
    ]
    later = [
        d.format()
        for d in lint_texts({"snp.yaml": SNP, "refs/r.yaml": refs}, now=NOW - timedelta(days=400))
    ]
    assert not any("good_measurements' expires" in m for m in later)


def test_warns_unknown_function() -> None:
    """A function the CEL runtime does not know is flagged."""
    text = SNP.replace(b"when: [flags.debug]", b'when: [\'flags.debug || lowerAscii("A") == "a"\']')
    messages = _messages({"snp.yaml": text, "refs/r.yaml": REFS})
    assert messages == [
        "snp.yaml:8:12: warning: unknown CEL function 'lowerAscii': always an error"
    ]


def test_empty_directory_warns(tmp_path: Path) -> None:
    """An empty policy directory denies everything, and lint says so."""
    assert [d.message for d in lint_dir(tmp_path, now=NOW)] == [
        "no policy files: every release is denied"
    ]


def test_cli_lint_exit_codes(tmp_path: Path) -> None:
    """``policy lint`` prints file:line:col lines and exits 1 on errors only."""
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "r.yaml").write_bytes(REFS)
    (tmp_path / "snp.yaml").write_bytes(SNP)
    runner = CliRunner()
    clean = runner.invoke(policy_group, ["lint", str(tmp_path)])
    assert clean.exit_code == 0, clean.output
    (tmp_path / "bad.yaml").write_bytes(b"version: 1\nrules: [\n")
    broken = runner.invoke(policy_group, ["lint", str(tmp_path)])
    assert broken.exit_code == 1
    assert f"{tmp_path}/bad.yaml:3:1: error: YAML syntax error" in broken.output
    (tmp_path / "bad.yaml").unlink()
    (tmp_path / "dev.yaml").write_bytes(
        b"version: 1\nresources: [a/b/c]\nrules:\n"
        b"  - {name: d, tee: sample, when: [claims.svn >= 1]}\n"
    )
    assert runner.invoke(policy_group, ["lint", str(tmp_path)]).exit_code == 0
    assert runner.invoke(policy_group, ["lint", "--strict", str(tmp_path)]).exit_code == 1


def test_shipped_policies_lint_strict_clean() -> None:
    """The policies shipped in policies/ have neither errors nor warnings."""
    root = Path(__file__).resolve().parents[3] / "policies"
    assert [d.format() for d in lint_dir(root, now=NOW)] == []


def test_shipped_policies_lint_strict_cli() -> None:
    """CI gate: ``broker policy lint --strict policies`` exits 0 on the shipped set."""
    root = Path(__file__).resolve().parents[3] / "policies"
    result = CliRunner().invoke(policy_group, ["lint", "--strict", str(root)])
    assert result.exit_code == 0, result.output


def test_production_refuses_dev_policies() -> None:
    """``--production`` turns a policy marked environment: dev into an error."""
    root = Path(__file__).resolve().parents[3] / "policies"
    errors = [d for d in lint_dir(root, now=NOW, production=True) if d.severity == "error"]
    assert [d.path.rsplit("/", 1)[-1] for d in errors] == ["dev-sample.yaml"]
