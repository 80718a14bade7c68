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

from components import yaml_io

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
PLACEHOLDER = re.compile(r"^\$\{([a-z_]+)\}$")


@functools.cache
def load_template(name: str) -> Any:
    return yaml_io.load((TEMPLATE_DIR / name).read_text())


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


def render(name: str, values: Mapping[str, Any]) -> str:
    return yaml_io.dump(fill(load_template(name), values))
