"""Benchmark 2: the critical path of remote steps, from the mock-recorded dependency graph.

    python3 bench/critical_path.py [--sizes 3 100]

Prints, per cluster size, the longest chain of remote commands with its step names, and the waits that say
nothing: dependencies already implied through another one, and cross-node waits the design does not call for.
Target: the same chain length for 3 and 100 nodes, equal to the design's minimal chain
wait-for-boot -> os-prep -> container-runtime -> kube-packages -> kubeadm-init -> calico -> kubeadm-join
-> membership -> cluster-ready -> smoke-test (a worker's join-command runs beside calico). Prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.program_eval import cluster_nodes  # noqa: E402
from components.mockrun import run_program  # noqa: E402
from components.step_graph import command_dependencies, longest_chain, redundant_waits  # noqa: E402

DESIGN_CHAIN = [
    "wait-for-boot", "os-prep", "container-runtime", "kube-packages", "kubeadm-init", "calico",
    "kubeadm-join", "membership", "cluster-ready", "smoke-test",
]  # fmt: skip
# Steps that legitimately wait on another node: the control plane's token and membership steps, the cluster checks.
CROSS_NODE_STEPS = ("-join-command", "-kubeadm-join", "-join-token-cleanup", "-membership", "-cluster-ready", "-smoke-test")


def step_kind(name: str) -> str:
    return next((kind for kind in DESIGN_CHAIN if name.endswith(kind)), name)


def node_of(name: str, node_names: list[str]) -> str:
    return next(node for node in sorted(node_names, key=len, reverse=True) if name.startswith(node + "-"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 100])
    args = parser.parse_args()
    lengths = []
    for size in args.sizes:
        nodes = cluster_nodes(size)
        run = run_program("dev", overrides={"nodes": nodes})
        chain = longest_chain(run)
        names = [node["name"] for node in nodes]
        dependencies = command_dependencies(run)
        stray = [
            (step, dependency)
            for step, waits in dependencies.items()
            for dependency in waits
            if node_of(step, names) != node_of(dependency, names) and not step.endswith(CROSS_NODE_STEPS)
        ]
        lengths.append(len(chain))
        print(f"{size} nodes: {len(dependencies)} commands, longest chain {len(chain)} steps")
        print("  " + " -> ".join(step_kind(step) for step in chain))
        print(f"  redundant waits: {len(redundant_waits(run))}; cross-node waits outside the design: {len(stray)}")
    same = len(set(lengths)) == 1
    print(f"chain length equal for all sizes: {same}; design minimal chain: {len(DESIGN_CHAIN)} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
