"""bench/program_eval.py compares the program with a skeleton; these keep that comparison meaningful as the program
changes: the skeleton registers the same resources (types, names, parents, dependency edges) with trivial inputs."""

from __future__ import annotations

import json

from bench.program_eval import cluster_nodes, run_skeleton, shape_of
from components.mockrun import Registration, reveal, run_program

SIZE = 4


def _graph(registrations: list[Registration], with_edges: bool = True) -> list[tuple]:
    names = {r.urn: r.name for r in registrations}
    return sorted(
        (
            r.type,
            r.name,
            names.get(r.parent, ""),
            tuple(sorted(names[urn] for urn in r.all_dependencies if urn in names)) if with_edges else (),
        )
        for r in registrations
    )


def test_the_skeleton_registers_the_programs_resources_and_edges() -> None:
    program = run_program("dev", overrides={"nodes": cluster_nodes(SIZE)}).registrations
    skeleton = run_skeleton(shape_of(SIZE), typed=True)
    assert _graph(skeleton) == _graph(program)
    # A new resource type in the program without a trivial constructor in bench/skeleton_program.py fails above
    # (KeyError); this checks that the inputs really are trivial: no rendered script, seed or key.
    longest = max(len(json.dumps(reveal(r.inputs))) for r in skeleton)
    assert longest < 200, longest
    assert max(len(json.dumps(reveal(r.inputs))) for r in program) > 5000


def test_the_untyped_skeleton_registers_the_same_resources_without_edges() -> None:
    program = run_program("dev", overrides={"nodes": cluster_nodes(SIZE)}).registrations
    untyped = run_skeleton(shape_of(SIZE), typed=False)
    assert _graph(untyped, with_edges=False) == _graph(program, with_edges=False)
    assert not any(r.all_dependencies for r in untyped)
