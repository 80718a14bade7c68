"""The graph of remote steps of a (mock) run: who waits for whom, and the longest chain."""

from __future__ import annotations

import functools

from components.mockrun import StackRun

COMMAND = "command:remote:Command"


def command_dependencies(run: StackRun) -> dict[str, frozenset[str]]:
    """Command name -> the names of the Commands it waits for (explicit or through its inputs)."""
    by_urn = run.by_urn()
    return {
        r.name: frozenset(by_urn[urn].name for urn in r.all_dependencies if by_urn[urn].type == COMMAND)
        for r in run.of_type(COMMAND)
    }


def longest_chain(run: StackRun) -> list[str]:
    """The longest path of Commands, each waiting on the one before: the critical path in steps."""
    dependencies = command_dependencies(run)

    @functools.cache
    def chain(name: str) -> tuple[str, ...]:
        before = max((chain(dependency) for dependency in sorted(dependencies[name])), key=len, default=())
        return (*before, name)

    return list(max((chain(name) for name in sorted(dependencies)), key=len, default=()))


def redundant_waits(run: StackRun) -> list[tuple[str, str]]:
    """(step, dependency) pairs already implied through another dependency: waits that cost nothing but say nothing."""
    dependencies = command_dependencies(run)

    @functools.cache
    def reachable(name: str) -> frozenset[str]:
        found: set[str] = set()
        for dependency in dependencies[name]:
            found |= {dependency} | reachable(dependency)
        return frozenset(found)

    return sorted(
        (name, dependency)
        for name, direct in dependencies.items()
        for dependency in direct
        if any(dependency in reachable(other) for other in direct - {dependency})
    )
