"""Benchmark 1: the cost of evaluating the program (what every `pulumi preview` pays), against a skeleton.

    python3 bench/program_eval.py [--sizes 3 20 100] [--rounds 5]
    python3 bench/program_eval.py --instructions [--sizes 3 20 100]    # repeatable counts, under valgrind

For each cluster size, runs the real program under Pulumi's mocks and two skeleton programs, each in a fresh
subprocess, rounds interleaved, and prints medians of the main thread's CPU time and of wall time, peak RSS, the
ratio program/skeleton and the cost per node. Targets: ratio <= 1.3 at every size; per-node cost flat from 3 to
100 nodes (no quadratic work in rendering or validation).

What is compared, and why:
- The skeleton (bench/skeleton_program.py) registers the program's resources: same types, names and parents,
  built with the providers' own classes (`remote.Command`, `libvirt.Domain`, ...) from constant required inputs
  only. It also declares the program's dependency edges, as `depends_on`: in the program they come from inputs
  that are other resources' outputs (keys, domain ids, stdout), so a skeleton without them would register a
  different graph. That is a reading of "trivial inputs"; the literal one is printed too ("untyped": bare
  `CustomResource`s under the same type tokens, no edges, column "vs untyped"), and the provider classes and the
  edges alone cost the SDK about twice what it costs.
- The ratio is on the main thread's CPU time, where the program and the SDK run. Under mocks the engine's side
  of every registration (the mock monitor decoding inputs and answering, and the recording this benchmark and
  the tests add) runs on the SDK's executor threads in the same process; in a real preview it is the engine's
  work, in another process. Wall time, which includes it, is printed too, with its own ratio.
- No clock covers the interpreter start, the imports (what __main__.py imports is imported first), nor reading
  the inputs: the skeleton's shape, and for the program the stack config merged from Pulumi.yaml and
  Pulumi.dev.yaml, which the CLI does in a real run.
- "extra ms/node" is (program - skeleton) / nodes: the program's own work per node (validation, rendering,
  Output wiring); it is what must stay flat. The raw cost per node of both grows a little from 20 to 100 nodes:
  the garbage collector walks a bigger heap (with it off, the skeleton's cost per node is flat).
- `--instructions` counts the main thread's instructions under callgrind instead of timing (what happens before
  the clock is counted apart and subtracted): slow, but the same figures on every run.
Prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.mockrun import CliConfig, Registration

ROOT = Path(__file__).resolve().parent.parent
SKELETON_PROGRAM = Path(__file__).resolve().parent / "skeleton_program.py"
# program: the real __main__.py; skeleton: typed, with the program's edges; untyped: bare resources, no edges.
KINDS = ("program", "skeleton", "untyped")
sys.path.insert(0, str(ROOT))


def cluster_nodes(size: int) -> list[dict]:
    nodes = [{"name": "kubernetes-master", "role": "control-plane", "ip": "192.168.141.130"}]
    nodes += [{"name": f"worker-{i:03d}", "role": "worker", "ip": f"192.168.141.{2 + i}"} for i in range(1, size)]
    return nodes


def child(kind: str, size: int, baseline: bool = False) -> None:
    """Runs in a subprocess: evaluate once, print wall seconds, main-thread CPU seconds and peak RSS as JSON.

    baseline: stop where the clock would start (what `--instructions` subtracts: interpreter, imports, inputs).
    """
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    # What __main__.py imports, imported before the clock starts, as loading modules is not evaluating the program
    # (here it also compiles them: PYTHONDONTWRITEBYTECODE is set, where a real run would load cached .pyc files).
    import components.infrastructure  # noqa: F401
    import components.kubeadm_cluster  # noqa: F401
    import components.stack_config  # noqa: F401
    from components.mockrun import cli_config, run_with_config

    # Reading Pulumi.yaml and merging the stack file is the CLI's work in a real run, not the program's: done
    # before the clock, like reading the skeleton's input.
    if kind == "program":
        config = cli_config("dev", overrides={"nodes": cluster_nodes(size)})
    else:
        config, shape = skeleton_config(), json.loads(sys.stdin.read())
    if baseline:
        _exit_now()
    start, start_cpu = time.perf_counter(), time.thread_time()
    if kind == "program":
        count = len(run_with_config(config).registrations)
    else:
        count = len(run_skeleton(shape, typed=kind == "skeleton", config=config))
    cpu, elapsed = time.thread_time() - start_cpu, time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_mib": peak_kib / 1024, "resources": count}))
    _exit_now()


def _exit_now() -> None:
    """Exit without tearing down the heap: with and without the evaluation, `--instructions` then counts the same
    work besides it (a bigger heap takes longer to free, and no clock measures that)."""
    sys.stdout.flush()
    os._exit(0)


def skeleton_config() -> CliConfig:
    """The skeleton runs in the program's project and stack, with no config values."""
    from components.mockrun import CliConfig, project_name

    return CliConfig(project=project_name(), stack="dev", values={})


def run_skeleton(shape: list[list], typed: bool, config: CliConfig | None = None) -> list[Registration]:
    """Evaluate bench/skeleton_program.py the way mockrun evaluates __main__.py (same mocks); return what it
    registered."""
    from components.mockrun import run_with_config

    config = config or skeleton_config()
    return run_with_config(
        config, program_file=SKELETON_PROGRAM, program_globals={"SHAPE": shape, "TYPED": typed}
    ).registrations


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
        ready = [
            r for r in pending
            if names.get(r.parent, "") in placed | {""} and placed.issuperset(_dependency_names(r, names))
        ]  # fmt: skip
        if not ready:
            unplaced = sorted(r.name for r in pending)
            raise RuntimeError(f"no order registers {unplaced} after their parents and dependencies")
        for r in ready:
            ordered.append([r.type, r.name, names.get(r.parent, ""), sorted(r.inputs), _dependency_names(r, names)])
            placed.add(r.name)
            pending.remove(r)
    return ordered


def _dependency_names(registration: Registration, names: dict[str, str]) -> list[str]:
    return sorted(names[urn] for urn in registration.all_dependencies if urn in names)


def _run_child(
    kind: str, size: int, shape: list, *, baseline: bool = False, wrapper: tuple[str, ...] = ()
) -> str:
    """Run `child` in a fresh interpreter (under `wrapper`, e.g. valgrind); the skeletons read `shape` on stdin."""
    result = subprocess.run(
        [*wrapper, sys.executable, __file__, "--child", kind, str(size), *(["--baseline"] if baseline else [])],
        input="" if kind == "program" else json.dumps(shape),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return result.stdout


def measure(kind: str, size: int, shape: list) -> dict:
    return json.loads(_run_child(kind, size, shape).strip().splitlines()[-1])


def measure_size(size: int, rounds: int) -> dict:
    """Medians (peak RSS: maximum) of `rounds` interleaved runs of each kind: a drift in load touches all alike."""
    shape = shape_of(size)
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind, results in runs.items():
            results.append(measure(kind, size, shape))
    row: dict = {"size": size, "resources": runs["program"][0]["resources"]}
    for kind, results in runs.items():
        row[kind] = {
            "cpu": statistics.median(r["cpu"] for r in results),
            "seconds": statistics.median(r["seconds"] for r in results),
            "peak_mib": max(r["peak_mib"] for r in results),
        }
    return row


def main_thread_instructions(kind: str, size: int, shape: list, baseline: bool) -> int:
    """Instructions the child's main thread executes, counted by callgrind: the same count run after run, whatever
    else the machine is doing (timings on a shared 2-core machine vary by 10-20 %)."""
    with tempfile.TemporaryDirectory() as scratch:
        callgrind = ("valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={scratch}/cg.out")
        _run_child(kind, size, shape, baseline=baseline, wrapper=callgrind)
        # Thread 1 is the main thread; the others are the SDK's executor threads, where the mock engine answers.
        totals = Path(scratch, "cg.out-01").read_text().split("\ntotals:", 1)[1].split()[0]
    return int(totals)


def print_instruction_counts(sizes: list[int]) -> None:
    print(f"{'nodes':>5} {'program Minstr':>14} {'skeleton Minstr':>15} {'ratio':>5} {'extra Minstr/node':>17}")
    for size in sizes:
        shape = shape_of(size)
        counts = {}
        for kind in ("program", "skeleton"):
            full = main_thread_instructions(kind, size, shape, baseline=False)
            counts[kind] = full - main_thread_instructions(kind, size, shape, baseline=True)
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
        help="count the main thread's instructions under valgrind instead of timing (repeatable; about 10 min)",
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

    rows = [measure_size(size, args.rounds) for size in args.sizes]
    print("main thread CPU (program and SDK), medians:")
    print(f"{'nodes':>5} {'resources':>9} {'program s':>9} {'skeleton s':>10} {'ratio':>5} {'program ms/node':>15} "
          f"{'skeleton ms/node':>16} {'extra ms/node':>13} {'untyped s':>9} {'vs untyped':>10}")  # fmt: skip
    for row in rows:
        program, skeleton, untyped, size = row["program"], row["skeleton"], row["untyped"], row["size"]
        print(
            f"{size:>5} {row['resources']:>9} {program['cpu']:>9.3f} {skeleton['cpu']:>10.3f} "
            f"{program['cpu'] / skeleton['cpu']:>5.2f} {1000 * program['cpu'] / size:>15.2f} "
            f"{1000 * skeleton['cpu'] / size:>16.2f} {1000 * (program['cpu'] - skeleton['cpu']) / size:>13.2f} "
            f"{untyped['cpu']:>9.3f} {program['cpu'] / untyped['cpu']:>10.2f}"
        )
    print("wall time (with the mock engine's threads) and peak RSS, medians and maxima:")
    print(f"{'nodes':>5} {'program s':>9} {'skeleton s':>10} {'ratio':>5} {'program MiB':>11} {'skeleton MiB':>12}")
    for row in rows:
        program, skeleton = row["program"], row["skeleton"]
        print(
            f"{row['size']:>5} {program['seconds']:>9.3f} {skeleton['seconds']:>10.3f} "
            f"{program['seconds'] / skeleton['seconds']:>5.2f} {program['peak_mib']:>11.1f} {skeleton['peak_mib']:>12.1f}"
        )
    print("target: ratio <= 1.3 at every size; the program's own cost per node (extra ms/node) flat from 3 to 100")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
