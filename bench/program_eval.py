"""Benchmark 1: the cost of evaluating the program (what every `pulumi preview` pays), against a skeleton.

    python3 bench/program_eval.py [--sizes 3 20 100] [--rounds 3]

For each cluster size, runs the real program under Pulumi's mocks and a skeleton program that registers the same
number and types of resources (same parents) with trivial inputs, each in a fresh subprocess, and prints wall
time, peak RSS, the ratio program/skeleton and the per-node cost. Targets: ratio <= 1.3 at every size; per-node
cost flat from 3 to 100 nodes (no quadratic work in rendering or validation). Prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cluster_nodes(size: int) -> list[dict]:
    nodes = [{"name": "kubernetes-master", "role": "control-plane", "ip": "192.168.141.130"}]
    nodes += [{"name": f"worker-{i:03d}", "role": "worker", "ip": f"192.168.141.{2 + i}"} for i in range(1, size)]
    return nodes


def child(kind: str, size: int) -> None:
    """Runs in a subprocess: evaluate once, print seconds and peak RSS as JSON."""
    import pulumi

    # Imported before the clock starts: module loading is paid once per process by both programs alike.
    import components.infrastructure  # noqa: F401
    import components.kubeadm_cluster  # noqa: F401
    from components.mockrun import ProgramMocks, RecordingMonitor, run_program

    overrides = {"nodes": cluster_nodes(size)}
    if kind == "program":
        start = time.perf_counter()
        run = run_program("dev", overrides=overrides)
        elapsed = time.perf_counter() - start
        count = len(run.registrations)
    else:
        shape = json.loads(sys.stdin.read())
        start = time.perf_counter()
        count = _run_skeleton(shape, pulumi, ProgramMocks, RecordingMonitor)
        elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_kib / 1024, "resources": count}))


def _run_skeleton(shape: list[list], pulumi, mocks_class, monitor_class) -> int:
    """Register the same (type, name, parent) resources, each input key set to a trivial value, same mocks."""
    from pulumi.runtime.settings import set_root_resource
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    mocks = mocks_class({})
    monitor = monitor_class(mocks)
    set_root_resource(None)
    pulumi.runtime.set_mocks(mocks, project="kubeadm-libvirt", stack="dev", preview=False, monitor=monitor)

    def program() -> None:
        created: dict[str, pulumi.Resource] = {}
        for type_, name, parent, keys in shape:
            opts = pulumi.ResourceOptions(parent=created.get(parent))
            if type_.startswith("kubeadm-libvirt:"):
                created[name] = pulumi.ComponentResource(type_, name, None, opts)
            else:
                created[name] = pulumi.CustomResource(type_, name, dict.fromkeys(keys, "x"), opts)

    _sync_await(run_pulumi_func(program))
    return len(monitor.registrations)


def shape_of(size: int) -> list[list[str]]:
    """(type, name, parent name, input keys) of what the real program registers, parents first."""
    from components.mockrun import run_program

    run = run_program("dev", overrides={"nodes": cluster_nodes(size)})
    names = {r.urn: r.name for r in run.registrations}
    ordered, placed = [], set()
    pending = list(run.registrations)
    while pending:
        for r in list(pending):
            parent = names.get(r.parent, "")
            if not parent or parent in placed:
                ordered.append([r.type, r.name, parent, sorted(r.inputs)])
                placed.add(r.name)
                pending.remove(r)
    return ordered


def measure(kind: str, size: int, shape: list | None) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(size)],
        input=json.dumps(shape) if shape is not None else "",
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 20, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0

    print(f"{'nodes':>5} {'resources':>9} {'program s':>10} {'skeleton s':>10} {'ratio':>6} "
          f"{'ms/node':>8} {'program MiB':>11} {'skeleton MiB':>12}")  # fmt: skip
    for size in args.sizes:
        shape = shape_of(size)
        program = [measure("program", size, None) for _ in range(args.rounds)]
        skeleton = [measure("skeleton", size, shape) for _ in range(args.rounds)]
        program_s = statistics.median(r["seconds"] for r in program)
        skeleton_s = statistics.median(r["seconds"] for r in skeleton)
        print(
            f"{size:>5} {program[0]['resources']:>9} {program_s:>10.3f} {skeleton_s:>10.3f} "
            f"{program_s / skeleton_s:>6.2f} {1000 * program_s / size:>8.2f} "
            f"{max(r['peak_mib'] for r in program):>11.1f} {max(r['peak_mib'] for r in skeleton):>12.1f}"
        )
    print("target: ratio <= 1.3 at every size; ms/node flat from 3 to 100 nodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
