"""Loading policy and reference files: schema, positions, digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import PolicyError
from broker.policy.load import load_policy_dir, load_policy_texts
from broker.policy.model import Effect
from tests.unit.policy.conftest import NOW, REFS, doc

VALID = doc(
    """
    version: 1
    name: team-a
    description: a test policy
    resources: ["default/*/*", "team-a/key/*"]
    rules:
      - name: sample-guests
        tee: sample
        when:
          - claims.svn >= 1
          - claims.m in refs.good_measurements
      - name: no-debug
        tee: [sample, tdx]
        effect: deny
        when:
          - flags.debug
    """
)


def _error(files: dict[str, bytes]) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy_texts(files, now=NOW)
    return info.value.diagnostics()


def test_valid_policy_loads() -> None:
    """A well-formed policy and refs file compile into a PolicySet."""
    policies = load_policy_texts({"a.yaml": VALID, "refs/r.yaml": REFS}, now=NOW)
    (policy,) = policies.policies
    assert policy.name == "team-a"
    assert policy.resources == ("default/*/*", "team-a/key/*")
    assert [r.name for r in policy.rules] == ["sample-guests", "no-debug"]
    assert policy.rules[1].effect is Effect.DENY
    assert policy.rules[1].tees == frozenset({"sample", "tdx"})
    assert policy.rules[0].conditions[1].refs == frozenset({"good_measurements"})
    assert policies.refs[0].values == ("aa", "bb")
    assert [name for name, _ in policies.files] == ["a.yaml", "refs/r.yaml"]


def test_name_defaults_to_file_stem() -> None:
    """Without ``name`` the policy is named after its file."""
    text = VALID.replace(b"name: team-a\n", b"")
    policies = load_policy_texts({"my-policy.yaml": text, "refs/r.yaml": REFS}, now=NOW)
    assert policies.policies[0].name == "my-policy"


def test_glob_stays_in_one_segment() -> None:
    """'*' matches within one path segment only."""
    policies = load_policy_texts({"a.yaml": VALID, "refs/r.yaml": REFS}, now=NOW)
    policy = policies.policies[0]
    assert policy.governs("default/key/1")
    assert policy.governs("team-a/key/x")
    assert not policy.governs("team-a/other/x")
    assert not policy.governs("default/key/1/2")
    assert not policy.governs("defaultx/key/1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "a.yaml:1:1: file is empty"),
        (b"version: 1\nrules: [\n", "a.yaml:3:1: YAML syntax error"),
        (b"a: b: c\n", "a.yaml:1:5: YAML syntax error: mapping values are not allowed here"),
        (b"- 1\n", "a.yaml:1:1: policy must be a mapping"),
        (b"\xff\xfe", "a.yaml:1:1: file is not valid UTF-8"),
        (b"x: &a [1]\ny: *a\n", "a.yaml:2:4: anchors and aliases are not allowed"),
    ],
)
def test_broken_yaml_names_file_line_col(text: bytes, expected: str) -> None:
    """YAML-level problems raise PolicyError with the exact position."""
    assert _error({"a.yaml": text}).startswith(expected)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b"version: 1", b"version: 2", "a.yaml:1:10: unsupported version 2"),
        (b"version: 1\n", b"", "a.yaml:1:1: policy: missing required key 'version'"),
        (b"    effect: deny", b"    effect: maybe", "a.yaml:13:13: rules[1].effect must be"),
        (b"    tee: sample\n", b"    tee: snp\n", "a.yaml:7:10: rules[0].tee: unknown TEE 'snp'"),
        (
            b"  - name: no-debug",
            b"  - name: sample-guests",
            "a.yaml:11:5: rules[1]: duplicate rule",
        ),
        (b"description: a", b"descripton: a", "a.yaml:3:1: policy: unknown key 'descripton'"),
        (
            b"      - flags.debug",
            b"      - flags.debug &&",
            "a.yaml:15:23: rules[1].when[0]: invalid CEL",
        ),
        (
            b"      - flags.debug",
            b"      - flag.debug",
            "a.yaml:15:9: rules[1].when[0]: unknown variable",
        ),
        (
            b"      - flags.debug",
            b"      - !flags.debug",
            "a.yaml:15:9: rules[1].when[0] must be a string",
        ),
        (b"refs.good_measurements", b"refs.bad", "a.yaml:10:9: rules[0].when[1]: no reference set"),
        (b'"default/*/*", ', b"", "a.yaml:1:1: policy name"),
        (b'"default/*/*"', b'"default/*"', "a.yaml:4:13: resources[0]: 'default/*' must be"),
    ],
)
def test_schema_errors_name_file_line_col(old: bytes, new: bytes, expected: str) -> None:
    """Schema problems point at the offending key or value."""
    assert old in VALID
    text = VALID.replace(old, new, 1)
    if expected.startswith("a.yaml:1:1: policy name"):
        # An invalid stem-derived name when ``name`` is absent.
        text = VALID.replace(b"name: team-a\n", b"")
        assert _error({"Bad Name.yaml": text, "refs/r.yaml": REFS}).startswith(
            "Bad Name.yaml:1:1: policy name 'Bad Name' must match"
        )
        return
    assert _error({"a.yaml": text, "refs/r.yaml": REFS}).startswith(expected)


def test_quoted_cel_error_column() -> None:
    """The column of a CEL error accounts for the YAML quote."""
    text = VALID.replace(b"      - flags.debug", b"      - 'flags.debug ||'")
    assert _error({"a.yaml": text, "refs/r.yaml": REFS}).startswith("a.yaml:15:24: ")


def test_block_scalar_cel_error_line() -> None:
    """A CEL error inside a block scalar points into the block."""
    text = VALID.replace(b"      - flags.debug", b"      - |\n        flags.debug &&\n        )")
    assert _error({"a.yaml": text, "refs/r.yaml": REFS}).startswith("a.yaml:17:9: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            b"rules:\n  - name: sample-guests",
            b"rules: []\nxrules:\n  - name: sample-guests",
            "rules must hold",
        ),
        (b"      - flags.debug\n", b"      []\n", "when must hold at least one condition"),
    ],
)
def test_empty_rules_and_conditions_refused(old: bytes, new: bytes, expected: str) -> None:
    """A policy without rules, or a rule without conditions, never loads."""
    text = VALID.replace(old, new)
    assert expected in _error({"a.yaml": text, "refs/r.yaml": REFS})


def test_empty_when_list_refused() -> None:
    """``when: []`` is refused: a rule needs at least one condition."""
    text = VALID.replace(b"    when:\n      - flags.debug\n", b"    when: []\n")
    assert _error({"a.yaml": text, "refs/r.yaml": REFS}) == (
        "a.yaml:14:11: rules[1].when must hold at least one condition"
    )


def test_duplicate_policy_names_refused() -> None:
    """Two files may not declare the same policy name."""
    message = _error({"a.yaml": VALID, "b.yaml": VALID, "refs/r.yaml": REFS})
    assert message == "b.yaml:2:7: policy name 'team-a' is already used by a.yaml"


def test_duplicate_ref_names_refused() -> None:
    """A reference-set name is unique across every refs file."""
    message = _error({"refs/a.yaml": REFS, "refs/b.yaml": REFS})
    assert (
        message
        == "refs/b.yaml:3:3: reference set 'good_measurements' is already defined at refs/a.yaml:3"
    )


def test_duplicate_keys_refused() -> None:
    """A key given twice is an error, not last-one-wins."""
    text = VALID.replace(b"name: team-a\n", b"name: team-a\nname: team-b\n")
    assert (
        _error({"a.yaml": text, "refs/r.yaml": REFS}) == "a.yaml:3:1: policy: duplicate key 'name'"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            b'values: ["aa", "bb"]',
            b"values: aa",
            "refs/r.yaml:7:13: refs.good_measurements.values must be a list",
        ),
        (
            b"    added_by: tests\n",
            b"",
            "refs/r.yaml:4:5: refs.good_measurements: missing required key 'added_by'",
        ),
        (b"good_measurements", b"Good", "refs/r.yaml:3:3: reference set name 'Good' must match"),
        (
            b"    added_by: tests\n",
            b"    added_by: tests\n    expires: 2026-01-01\n",
            "refs/r.yaml:7:14: refs.good_measurements.expires must be an RFC 3339",
        ),
        (
            b"    added_by: tests\n",
            b"    added_by: tests\n    expires: '2026-01-01T00:00:00'\n",
            "refs/r.yaml:7:14: refs.good_measurements.expires must be",
        ),
        (
            b"    added_by: tests\n",
            b"    added_by: tests\n    owner: x\n",
            "refs/r.yaml:7:5: refs.good_measurements: unknown key 'owner'",
        ),
        (
            b'["aa", "bb"]',
            b"[aa, [bb]]",
            "refs/r.yaml:7:18: refs.good_measurements.values[1] must be a string",
        ),
    ],
)
def test_refs_schema_errors(old: bytes, new: bytes, expected: str) -> None:
    """Reference files are schema checked like policies."""
    assert old in REFS
    assert _error({"refs/r.yaml": REFS.replace(old, new)}).startswith(expected)


def test_refs_expiry_parsed() -> None:
    """``expires`` accepts quoted and unquoted RFC 3339 date-times with an offset."""
    for value in (b"2027-01-01T00:00:00Z", b"'2027-01-01T02:00:00+02:00'"):
        text = REFS.replace(
            b"    added_by: tests\n", b"    added_by: tests\n    expires: " + value + b"\n"
        )
        policies = load_policy_texts({"refs/r.yaml": text}, now=NOW)
        assert policies.refs[0].expires is not None
        assert policies.refs[0].expires.timestamp() == 1798761600


def test_load_reports_first_error_in_file_order() -> None:
    """With several broken files, the first in name order is raised."""
    message = _error({"b.yaml": b"- 1\n", "a.yaml": b"version: 1\nfoo: 1\n"})
    assert message.startswith("a.yaml:1:1:")


def test_digest_is_stable_and_sensitive() -> None:
    """The digest depends on names and bytes only, not on dict order."""
    files = {"a.yaml": VALID, "refs/r.yaml": REFS}
    one = load_policy_texts(files, now=NOW)
    two = load_policy_texts(dict(reversed(list(files.items()))), now=NOW)
    assert one.digest == two.digest
    assert one.digest.startswith("sha256:")
    assert len(one.digest) == 71
    changed = load_policy_texts({"a.yaml": VALID + b"# comment\n", "refs/r.yaml": REFS}, now=NOW)
    assert changed.digest != one.digest
    renamed = load_policy_texts({"b.yaml": VALID, "refs/r.yaml": REFS}, now=NOW)
    assert renamed.digest != one.digest


def test_load_policy_dir_reads_refs_subdirectory(tmp_path: Path) -> None:
    """A directory load matches the text load, and error paths include the directory."""
    (tmp_path / "refs").mkdir()
    (tmp_path / "a.yaml").write_bytes(VALID)
    (tmp_path / "refs" / "r.yaml").write_bytes(REFS)
    (tmp_path / "README.md").write_bytes(b"not policy")
    from_dir = load_policy_dir(tmp_path, now=NOW)
    from_texts = load_policy_texts({"a.yaml": VALID, "refs/r.yaml": REFS}, now=NOW)
    assert from_dir.digest == from_texts.digest
    (tmp_path / "a.yaml").write_bytes(b"version: 1\nfoo: 1\n")
    with pytest.raises(PolicyError) as info:
        load_policy_dir(tmp_path, now=NOW)
    assert info.value.path == f"{tmp_path}/a.yaml"
    assert (info.value.line, info.value.col) == (1, 1)


def test_missing_directory_refused(tmp_path: Path) -> None:
    """A policy directory that does not exist is an error, not an empty set."""
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy_dir(tmp_path / "nope", now=NOW)
