"""Checks that keep deploy/ in step with the broker (no cluster, engine or systemd needed)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.vectors import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"
SYSTEMD = DEPLOY / "systemd"

# Options of `broker serve` the manifests already use and the broker is gaining in the
# same release; anything else unknown to broker/cli/serve.py is an error.
PENDING_SERVE_OPTIONS = frozenset({"--workers"})


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``; each must be a mapping."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def kubernetes_objects() -> list[dict[str, Any]]:
    """The objects of every manifest the kustomization applies."""
    kustomization = yaml_documents(KUBERNETES / "kustomization.yaml")[0]
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects += yaml_documents(KUBERNETES / name)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def serve_options(command: list[str]) -> list[str]:
    """The ``--options`` given to ``broker serve`` in one command line."""
    assert "serve" in command, command
    rest = command[command.index("serve") + 1 :]
    return [word.split("=", 1)[0] for word in rest if word.startswith("--")]


def shell_words(line: str) -> list[str]:
    return shlex.split(line)


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (None: not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
