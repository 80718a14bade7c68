"""Templates as data: YAML files whose placeholder values (`${name}`) are replaced by typed values, then dumped.

A placeholder is a whole scalar, never part of one, so a list or a mapping can be substituted as such and nothing
is ever spliced into YAML text. Missing or unused values are errors, so a template and its renderer cannot drift.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
PLACEHOLDER = re.compile(r"^\$\{([a-z_]+)\}$")


@functools.cache
def load_template(name: str) -> Any:
    return yaml.safe_load((TEMPLATE_DIR / name).read_text())


def fill(template: Any, values: Mapping[str, Any]) -> Any:
    """A copy of `template` with every `${name}` scalar replaced by values[name]."""
    used: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, str) and (match := PLACEHOLDER.match(node)):
            name = match.group(1)
            if name not in values:
                raise KeyError(f"template placeholder ${{{name}}} has no value")
            used.add(name)
            return values[name]
        return node

    filled = walk(template)
    unused = set(values) - used
    if unused:
        raise KeyError(f"values without a placeholder in the template: {sorted(unused)}")
    return filled


def dump(document: Any) -> str:
    """Deterministic YAML: template key order kept, no aliases, no line folding."""

    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)


class _Dumper(yaml.SafeDumper):
    """No aliases (each node reads on its own), and multi-line strings (keys, files) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.rstrip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render(name: str, values: Mapping[str, Any]) -> str:
    return dump(fill(load_template(name), values))
