"""Benchmark 4: the real engine on a lab host (needs root; builds the lab toolchain and image if missing).

    sudo python3 bench/engine.py [--preview-sizes 3 20 100] [--up]

--preview-sizes: wall time of a real `pulumi preview` of a fresh stack with N nodes (the CLI, the engine, the
    plugins' Check and Diff) beside the mock evaluation of the same program (what the program itself costs).
--up: `pulumi up` of the lab stack (two TCG nodes; it stops at the container runtime, the first download):
    per-resource durations from the engine's events (whole seconds: the events carry Unix seconds), the critical
    path through the program's dependency graph weighted by those durations, and the orchestration overhead, wall
    time minus the critical path. Then a second `up`, which resumes at the failed step, and `destroy`.
Prints figures and exits 0; the lab host it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi import automation as auto  # noqa: E402

from bench.program_eval import cluster_nodes  # noqa: E402
from components.mockrun import StackRun, run_program  # noqa: E402
from lab import host, netns  # noqa: E402
from lab.engine import Engine, copy_project, deadline  # noqa: E402
from lab.image import build_guest_image  # noqa: E402
from lab.stacks import lab_stack_config  # noqa: E402
from lab.toolchain import ensure_toolchain  # noqa: E402


def bench_previews(engine: Engine, uri: str, sizes: list[int], work: Path) -> None:
    print("real pulumi preview (fresh stack) beside the mock evaluation of the same program")
    print(f"  {'nodes':>5} {'resources':>9} {'preview wall':>13} {'mock eval':>10} {'ratio':>6}")
    for size in sizes:
        nodes = cluster_nodes(size)
        started = time.monotonic()
        mock = run_program("dev", overrides={"nodes": nodes})
        mock_seconds = time.monotonic() - started
        stack = engine.stack(f"preview-{size}", copy_project(work / f"p{size}"), config={"libvirt:uri": uri, "kubeadm-libvirt:nodes": nodes})
        started = time.monotonic()
        with deadline(30 * 60, f"preview of {size} nodes"):
            stack.preview()
        wall = time.monotonic() - started
        print(f"  {size:>5} {len(mock.registrations):>9} {wall:>12.1f}s {mock_seconds:>9.2f}s {wall / mock_seconds:>6.1f}")


def step_durations(events: list[auto.EngineEvent]) -> dict[str, float]:
    """Resource name -> seconds from the engine starting each of its steps to that step's outcome, summed: a
    replaced resource has several (create the replacement, replace, delete the replaced one, whose delete hook may
    be a drain), and its creation is the one that counts for the up, not the last."""
    started: dict[str, int] = {}
    durations: dict[str, float] = {}
    for event in events:
        if event.resource_pre_event is not None:
            started[event.resource_pre_event.metadata.urn] = event.timestamp
        outcome = event.res_outputs_event or event.res_op_failed_event
        if outcome is not None and outcome.metadata.urn in started:
            urn = outcome.metadata.urn
            name = urn.rsplit("::", 1)[1]
            durations[name] = durations.get(name, 0.0) + event.timestamp - started.pop(urn)
    return durations


def critical_path(run: StackRun, durations: dict[str, float]) -> tuple[float, list[str]]:
    """The heaviest chain of resources that ran, each waiting on the one before (through inputs or depends_on)."""
    by_urn = run.by_urn()
    waits = {r.name: [by_urn[u].name for u in r.all_dependencies if u in by_urn] for r in run.registrations}

    @functools.cache
    def heaviest(name: str) -> tuple[float, tuple[str, ...]]:
        before = max((heaviest(d) for d in sorted(waits.get(name, [])) if d in durations), default=(0.0, ()))
        return before[0] + durations[name], (*before[1], name)

    return max((heaviest(name) for name in durations if name in waits), default=(0.0, ()))


def up_figures(what: str, run: StackRun, events: list[auto.EngineEvent], wall: float, top: int = 12) -> str:
    """The figures of one `pulumi up`: its slowest resource steps, the critical path through the program's graph
    weighted by the steps' durations, and the orchestration overhead (wall time minus that path). `run` is the mock
    evaluation of the same program and config, for the dependency graph. Also printed by tests/test_cluster.py for
    its real runs."""
    custom = {r.name for r in run.registrations if r.custom}  # components and the stack do no work of their own
    durations = {name: seconds for name, seconds in step_durations(events).items() if name in custom}
    path_seconds, path = critical_path(run, durations)
    overhead = wall - path_seconds
    lines = [f"{what}: wall {wall:.0f} s, {len(durations)} resource steps"]
    lines += [f"  {seconds:>5.0f} s  {name}" for name, seconds in sorted(durations.items(), key=lambda item: -item[1])[:top]]
    lines.append(f"  critical path {path_seconds:.0f} s: {' -> '.join(path)}")
    lines.append(f"  orchestration overhead (wall - critical path): {overhead:.0f} s ({overhead / wall:.0%} of wall)")
    return "\n".join(lines)


def memory_figures(lab_host: host.LabHost) -> str:
    """Peak resident memory so far: each running VM's QEMU (VmHWM, by the pid file libvirt keeps per domain) and the
    largest finished child of this process (the Pulumi CLI or a plugin, ru_maxrss; the lab's stand-in plugins and the
    inline program run inside this process and are not counted)."""
    peaks = {}
    for pid_file in sorted((lab_host.run_dir / "qemu").glob("*.pid")):
        if pid_file.stem == "driver":
            continue  # libvirt's QEMU driver lock, not a domain
        try:
            status = Path(f"/proc/{int(pid_file.read_text())}/status").read_text()
        except (OSError, ValueError):
            continue  # the domain stopped meanwhile
        peaks[pid_file.stem] = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    vms = ", ".join(f"{name} {mib:.0f}" for name, mib in peaks.items())
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"memory peaks (MiB): VMs {sum(peaks.values()):.0f} ({vms}); largest child process {child:.0f}; this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"


def bench_up(engine: Engine, uri: str, image: Path, work: Path) -> None:
    config = lab_stack_config(uri, image)
    stack = engine.stack("bench-up", copy_project(work / "up"), config=config)
    run = run_program("bench-up", overrides=config)
    for attempt in ("first up", "second up (resumes at the failed step)"):
        events: list[auto.EngineEvent] = []
        started = time.monotonic()
        try:
            with deadline(60 * 60, attempt):
                stack.up(on_event=events.append, continue_on_error=True)
        except auto.CommandError:
            pass  # expected: the container runtime's source is unreachable in the lab
        print(up_figures(attempt, run, events, time.monotonic() - started))
    started = time.monotonic()
    with deadline(20 * 60, "destroy"):
        stack.destroy()
    print(f"destroy: {time.monotonic() - started:.0f} s")


@dataclass(frozen=True)
class BenchLab:
    engine: Engine
    host: host.LabHost
    image: Path  # the lab guest image (qcow2)
    work: Path  # scratch: the stacks' project copies and state


@contextmanager
def bench_lab(prefix: str) -> Iterator[BenchLab]:
    """The lab toolchain and guest image (built if missing), a lab host of this process's own with the calling thread
    inside its namespace (lab/netns.py), and an engine whose state lives in a scratch directory; the host is stopped
    at the end."""
    toolchain = ensure_toolchain()
    image = build_guest_image()
    name = f"{prefix}-{os.getpid()}"
    lab_host = host.start(name)
    try:
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch, netns.joined(lab_host.namespace):
            work = Path(scratch)
            yield BenchLab(Engine(toolchain=toolchain, backend_dir=work / "state"), lab_host, image, work)
    finally:
        host.stop(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preview-sizes", type=int, nargs="*", default=[3, 20, 100])
    parser.add_argument("--up", action="store_true")
    args = parser.parse_args()
    with bench_lab("bench") as lab:
        if args.preview_sizes:
            bench_previews(lab.engine, lab.host.uri, args.preview_sizes, lab.work)
        if args.up:
            bench_up(lab.engine, lab.host.uri, lab.image, lab.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
