"""Every yaml example in docs/policy-language.md loads, lints clean or runs."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from broker.policy.lint import lint_texts
from broker.policy.load import collect, load_policy_texts, read_policy_dir
from broker.policy.testing import PASS, SKIP, evidence_source, parse_cases, run_case
from tests.unit.policy.conftest import NOW
from tests.vectors import EVIDENCE_DIR, REPO_ROOT

DOC = (REPO_ROOT / "docs" / "policy-language.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
REFS = {k: v for k, v in read_policy_dir(REPO_ROOT / "policies").items() if k.startswith("refs/")}
TEES = "[sev-snp, tdx, sgx, nitro, az-snp-vtpm, az-tdx-vtpm]"


def _guide_policies() -> dict[str, bytes]:
    out = {}
    for block in BLOCKS:
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and str(doc.get("name", "")).startswith("guide-"):
            out[f"{doc['name']}.yaml"] = block.encode()
    return out


def _wrap(block: str) -> bytes:
    """A fragment (a rule list or a condition list) as a loadable policy."""
    body = textwrap.dedent(block)
    if body.lstrip().startswith("- name:"):
        rules = textwrap.indent(body, "  ")
    else:
        rules = f"  - name: fragment\n    tee: {TEES}\n    when:\n" + textwrap.indent(
            body, "      "
        )
    return f"version: 1\nresources: [a/b/c]\nrules:\n{rules}".encode()


@pytest.mark.parametrize("block", BLOCKS)
def test_every_yaml_block_loads(block: str) -> None:
    """Each yaml example parses as a policy, a refs file, a test file or a fragment."""
    doc = yaml.safe_load(block)
    if isinstance(doc, dict) and "cases" in doc:
        assert parse_cases({"t.yaml": block.encode()})
    elif isinstance(doc, dict) and "refs" in doc:
        found = collect({"refs/x.yaml": block.encode()})
        assert found.errors == [] and found.refs
    elif isinstance(doc, dict) and "rules" in doc:
        refs = {
            "refs/g.yaml": b"version: 1\nrefs:\n  snp_measurements: {description: d, source: s, added_by: a, values: []}\n"
        }
        files = {
            "p.yaml": block.encode(),
            **(REFS if doc.get("name", "").startswith("guide-") else refs),
        }
        assert collect(files).errors == []
    else:
        assert collect({"p.yaml": _wrap(block), **REFS}).errors == []


def test_worked_examples_lint_strict_clean() -> None:
    """The complete worked examples have neither errors nor warnings (beyond unused refs)."""
    found = lint_texts({**_guide_policies(), **REFS}, now=NOW)
    assert [d.format() for d in found if "is not used" not in d.message] == []


def test_worked_examples_pass_their_cases() -> None:
    """The guide's test cases pass against the worked examples."""
    policies = load_policy_texts({**_guide_policies(), **REFS}, now=NOW)
    (block,) = [b for b in BLOCKS if b.startswith("version: 1\ncases:")]
    results = [
        run_case(c, policies, evidence_source(EVIDENCE_DIR), NOW)
        for c in parse_cases({"g.yaml": block.encode()})
    ]
    assert all(r.status in (PASS, SKIP) for r in results), [r.format() for r in results]
    assert len(results) == 3
