"""Benchmark 1: the cost of evaluating the program (what every `pulumi preview` pays), against a skeleton.

    python3 bench/program_eval.py [--sizes 3 20 100] [--rounds 5]
    python3 bench/program_eval.py --instructions [--sizes 3 20 100]    # repeatable counts, under valgrind

For each cluster size, runs the real program under Pulumi's mocks and a skeleton program that registers the same
resources (same types, names, parents and dependency edges) with trivial inputs, each in a fresh subprocess,
interleaved, and prints medians of wall time and of the main thread's CPU time, peak RSS, the ratio
program/skeleton and the per-node cost. Targets: ratio <= 1.3 at every size; per-node cost flat from 3 to 100
nodes (no quadratic work in rendering or validation).

What is compared, and why:
- CPU time of the main thread, where the program and the SDK run. Under mocks the engine is Python too: the mock
  monitor answers each registration on the SDK's executor threads, in this process. In a real preview that work
  is the Pulumi engine's, in another process. Wall time, which includes it, is printed as well.
- The skeleton builds each resource with the provider's own Python class (`remote.Command`, `libvirt.Domain`,
  ...) and only its required inputs, set to constants, with the program's dependency edges as `depends_on`: what
  any program registering this graph pays the SDK. A bare skeleton (`CustomResource`s under the same type tokens,
  no edges) is printed for reference ("untyped"): the typed classes and the edges cost the SDK about twice as much.
- Neither clock covers the interpreter start, the imports, nor reading the inputs: the skeleton's shape, and for
  the program the stack config merged from Pulumi.yaml and Pulumi.dev.yaml (the CLI's work in a real run).
- `--instructions` counts the main thread's instructions under callgrind (everything before the clock is counted
  apart and subtracted) instead of timing: slow, but the same figures on every run.
- "extra ms/node" is (program - skeleton) / nodes: the program's own work per node (validation, rendering,
  Output wiring). It is what must stay flat; the SDK's own cost per resource grows with the heap (garbage
  collection), in the skeleton as in the program.
Prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKELETON_PROGRAM = Path(__file__).resolve().parent / "skeleton_program.py"
sys.path.insert(0, str(ROOT))


def cluster_nodes(size: int) -> list[dict]:
    nodes = [{"name": "kubernetes-master", "role": "control-plane", "ip": "192.168.141.130"}]
    nodes += [{"name": f"worker-{i:03d}", "role": "worker", "ip": f"192.168.141.{2 + i}"} for i in range(1, size)]
    return nodes


def child(kind: str, size: int, baseline: bool = False) -> None:
    """Runs in a subprocess: evaluate once, print wall seconds, main-thread CPU seconds and peak RSS as JSON.

    baseline: stop where the clock would start (what `--instructions` subtracts: interpreter, imports, inputs).
    """
    # What __main__.py imports, imported before the clock starts: module loading (compiling, where no .pyc is
    # written) is paid once per process, by any program alike.
    import components.infrastructure  # noqa: F401
    import components.kubeadm_cluster  # noqa: F401
    import components.stack_config  # noqa: F401
    from components.mockrun import cli_config, run_with_config

    # Merging Pulumi.yaml with the stack file is the CLI's work in a real run, not the program's: done before the
    # clock, like the skeleton's input.
    config = cli_config("dev", overrides={"nodes": cluster_nodes(size)}) if kind == "program" else None
    shape = None if kind == "program" else json.loads(sys.stdin.read())
    if baseline:
        return
    start, start_cpu = time.perf_counter(), time.thread_time()
    if config is not None:
        count = len(run_with_config(config).registrations)
    else:
        count = len(run_skeleton(shape, typed=kind == "skeleton"))
    cpu, elapsed = time.thread_time() - start_cpu, time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_mib": peak_kib / 1024, "resources": count}))


def run_skeleton(shape: list[list], typed: bool) -> list:
    """Evaluate bench/skeleton_program.py under the same mocks, the way mockrun evaluates __main__.py; return what
    it registered (mockrun Registrations)."""
    import runpy

    import pulumi
    from pulumi.runtime.settings import set_root_resource
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from components.mockrun import ProgramMocks, RecordingMonitor

    mocks = ProgramMocks({})
    monitor = RecordingMonitor(mocks)
    set_root_resource(None)
    pulumi.runtime.set_mocks(mocks, project="kubeadm-libvirt", stack="dev", preview=False, monitor=monitor)

    def program() -> None:
        runpy.run_path(str(SKELETON_PROGRAM), init_globals={"SHAPE": shape, "TYPED": typed}, run_name="__main__")

    _sync_await(run_pulumi_func(program))
    return monitor.registrations


def shape_of(size: int) -> list[list]:
    """(type, name, parent, input keys, dependencies) of what the real program registers, in an order where every
    resource comes after its parent and its dependencies (names throughout)."""
    from components.mockrun import run_program

    run = run_program("dev", overrides={"nodes": cluster_nodes(size)})
    names = {r.urn: r.name for r in run.registrations}
    ordered: list[list] = []
    placed: set[str] = set()
    pending = list(run.registrations)
    while pending:
        for r in list(pending):
            parent = names.get(r.parent, "")
            dependencies = sorted(names[urn] for urn in r.all_dependencies if urn in names)
            if (not parent or parent in placed) and placed.issuperset(dependencies):
                ordered.append([r.type, r.name, parent, sorted(r.inputs), dependencies])
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


def main_thread_instructions(kind: str, size: int, shape: list | None, baseline: bool) -> int:
    """Instructions the child's main thread executes, counted by callgrind: the same count run after run, whatever
    else the machine is doing (timings on a shared 2-core machine vary by 10-20 %)."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={scratch}/cg.out",
             sys.executable, __file__, "--child", kind, str(size), *(["--baseline"] if baseline else [])],
            input=json.dumps(shape) if shape is not None else "",
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        # Thread 1 is the main thread; the others are the SDK's executor threads, where the mock engine answers.
        totals = Path(scratch, "cg.out-01").read_text().split("\ntotals:", 1)[1].split()[0]
    return int(totals)


def print_instruction_counts(sizes: list[int]) -> None:
    print(f"{'nodes':>5} {'program Minstr':>14} {'skeleton Minstr':>15} {'ratio':>5} {'extra Minstr/node':>17}")
    for size in sizes:
        shape = shape_of(size)
        counts = {}
        for kind in ("program", "skeleton"):
            kind_shape = None if kind == "program" else shape
            full = main_thread_instructions(kind, size, kind_shape, baseline=False)
            counts[kind] = full - main_thread_instructions(kind, size, kind_shape, baseline=True)
        program, skeleton = counts["program"] / 1e6, counts["skeleton"] / 1e6
        extra_per_node = (program - skeleton) / size
        print(f"{size:>5} {program:>14.0f} {skeleton:>15.0f} {program / skeleton:>5.2f} {extra_per_node:>17.2f}")
    print("target: ratio <= 1.3 at every size; extra Minstr/node flat from 3 to 100")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 20, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the main thread's instructions under valgrind instead of timing (repeatable; about 20 min)",
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.baseline)
        return 0
    if args.instructions:
        print_instruction_counts(args.sizes)
        return 0

    print(f"{'nodes':>5} {'resources':>9} {'program s':>9} {'program cpu':>11} {'skeleton cpu':>12} {'ratio':>5} "
          f"{'ms/node':>7} {'extra ms/node':>13} {'program MiB':>11} {'skeleton MiB':>12} {'untyped cpu':>11}")  # fmt: skip
    for size in args.sizes:
        shape = shape_of(size)
        # Interleaved rounds: a drift in machine load touches all three alike.
        runs: dict[str, list[dict]] = {"program": [], "skeleton": [], "untyped": []}
        for _ in range(args.rounds):
            for kind, results in runs.items():
                results.append(measure(kind, size, None if kind == "program" else shape))
        program_s = statistics.median(r["seconds"] for r in runs["program"])
        program_cpu, skeleton_cpu, untyped_cpu = (statistics.median(r["cpu"] for r in runs[kind]) for kind in runs)
        print(
            f"{size:>5} {runs['program'][0]['resources']:>9} {program_s:>9.3f} {program_cpu:>11.3f} "
            f"{skeleton_cpu:>12.3f} {program_cpu / skeleton_cpu:>5.2f} {1000 * program_cpu / size:>7.2f} "
            f"{1000 * (program_cpu - skeleton_cpu) / size:>13.2f} "
            f"{max(r['peak_mib'] for r in runs['program']):>11.1f} "
            f"{max(r['peak_mib'] for r in runs['skeleton']):>12.1f} {untyped_cpu:>11.3f}"
        )
    print("target: ratio <= 1.3 at every size; the program's own cost per node (extra ms/node) flat from 3 to 100")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
