"""Read Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI does, for runs without the CLI.

The CLI merges project defaults with the stack's values and hands the program every value as a string (structured
values as JSON). The offline plan, the tests and the benchmarks run the program under mocks and need the very same
merged mapping; this module produces it, so they exercise the real defaults instead of a copy of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components import yaml_io

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_project(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    return yaml_io.load((root / "Pulumi.yaml").read_text())


def project_name(root: Path = PROJECT_ROOT) -> str:
    return load_project(root)["name"]


def declared_keys(root: Path = PROJECT_ROOT) -> frozenset[str]:
    """The project's own config keys (provider keys such as libvirt:uri excluded)."""
    return frozenset(key for key in load_project(root).get("config", {}) if ":" not in key)


def _as_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def merged_config(
    stack: str = "dev", overrides: Mapping[str, Any] | None = None, root: Path = PROJECT_ROOT
) -> dict[str, str]:
    """Namespaced key -> string value: project defaults, then the stack file, then `overrides` (short or full keys)."""
    project = load_project(root)
    name = project["name"]

    def full(key: str) -> str:
        return key if ":" in key else f"{name}:{key}"

    merged: dict[str, str] = {}
    for key, declaration in project.get("config", {}).items():
        if isinstance(declaration, dict) and ("default" in declaration or "value" in declaration):
            merged[full(key)] = _as_config_string(declaration.get("value", declaration.get("default")))
        elif not isinstance(declaration, dict):
            merged[full(key)] = _as_config_string(declaration)
    stack_file = root / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        stack_values = (yaml_io.load(stack_file.read_text()) or {}).get("config", {}) or {}
        for key, value in stack_values.items():
            if isinstance(value, dict) and "secure" in value:
                raise ValueError(f"{stack_file.name}: {key} is encrypted; pass its value in `overrides` for an offline run")
            merged[full(key)] = _as_config_string(value)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(full(key), None)
        else:
            merged[full(key)] = _as_config_string(value)
    return merged
