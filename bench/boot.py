"""Benchmark 3: how long the stack's VMs take to boot, per node, with N nodes booting together (needs root).

    sudo python3 bench/boot.py [--nodes 1 2 3] [--rounds 1]

For each N, a fresh lab stack of N nodes (a control plane and N-1 workers on the lab network; lab/stacks.py: the lab
host's libvirt, the lab's Debian 12 image, TCG) gets a real `pulumi up` limited with --target to what the VMs need
(network, base image, keys, disks, seeds, domains; no remote step runs, so nothing but the boots loads the machine).
Each node is timed from its domain running (the engine's event for the domain, as this process receives it) to
SSH-ready (the first login with the stack's user and a configured key, from inside the lab namespace) and to
cloud-init done (`cloud-init status --wait` returning), then the stack is destroyed. Prints each node, then per N
the medians over rounds of the slowest node. Builds the lab toolchain and image if missing; prints figures, exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi import automation as auto  # noqa: E402

from bench.engine import BenchLab, bench_lab  # noqa: E402
from components.mockrun import run_program  # noqa: E402
from lab.engine import copy_project, deadline  # noqa: E402
from lab.stacks import LAB_NODES, lab_stack_config  # noqa: E402

DOMAIN_TYPE = "libvirt:index/domain:Domain"
REMOTE_STEP_TYPE = "command:remote:Command"
BOOT_SECONDS = 15 * 60  # per node, from its domain running to cloud-init done; TCG on a loaded machine
SSH_USER = "ubuntu"  # the project's default sshUser, which the lab stack keeps


def lab_nodes(count: int) -> list[dict[str, str]]:
    """The lab stack's control plane and `count - 1` workers at the next addresses (lab-w1 is the lab's own)."""
    control_plane = LAB_NODES[0]
    first = ipaddress.ip_address(control_plane["ip"])
    return [control_plane, *({"name": f"lab-w{i}", "role": "worker", "ip": str(first + i)} for i in range(1, count))]


@dataclass
class NodeBoot:
    name: str
    ip: str
    running_at: float = 0.0  # time.monotonic() when the engine reported the domain created (running)
    ssh_seconds: float | None = None
    cloud_init_seconds: float | None = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def ssh(key: Path, ip: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    options = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-i", str(key)]  # fmt: skip
    return subprocess.run(["ssh", *options, f"{SSH_USER}@{ip}", command], capture_output=True, text=True, timeout=timeout)


def watch(boot: NodeBoot, key: Path) -> None:
    """Poll until a login works, then wait for cloud-init; record both, counted from the domain running."""
    try:
        give_up = boot.running_at + BOOT_SECONDS
        while boot.ssh_seconds is None:
            try:
                if ssh(key, boot.ip, "true", timeout=30).returncode == 0:
                    boot.ssh_seconds = time.monotonic() - boot.running_at
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > give_up:
                raise TimeoutError(f"no SSH login within {BOOT_SECONDS} s")
            time.sleep(1)
        # sshd restarts once during first boot (cloud-init applies its settings): a reset login is retried.
        while boot.cloud_init_seconds is None:
            if ssh(key, boot.ip, "cloud-init status --wait >/dev/null", timeout=BOOT_SECONDS).returncode != 255:
                boot.cloud_init_seconds = time.monotonic() - boot.running_at
            elif time.monotonic() > give_up:
                raise TimeoutError(f"cloud-init not done within {BOOT_SECONDS} s")
            else:
                time.sleep(1)
    except Exception as error:  # reported with the figures, never lost in a thread
        boot.error = str(error)
    finally:
        boot.done.set()


def boot_round(lab: BenchLab, count: int, label: str, key: Path) -> list[NodeBoot]:
    nodes = lab_nodes(count)
    # A configured key pair (not a generated one): the probes need the private key before the up has finished.
    keys = {"sshPublicKey": key.with_suffix(".pub").read_text().strip(), "sshPrivateKey": key.read_text()}
    config = lab_stack_config(lab.host.uri, lab.image, nodes=tuple(nodes))
    stack = lab.engine.stack(label, copy_project(lab.work / label), config={
        **config,
        "kubeadm-libvirt:sshPublicKey": keys["sshPublicKey"],
        "kubeadm-libvirt:sshPrivateKey": auto.ConfigValue(keys["sshPrivateKey"], secret=True),
    })  # fmt: skip
    # The URNs the engine gives the program's resources (the mocks name them alike: tests/test_engine.py).
    mocked = run_program(label, overrides={**config, **keys}, secret_keys=["sshPrivateKey"])
    targets = [r.urn for r in mocked.registrations if r.type != REMOTE_STEP_TYPE and r.type != "pulumi:pulumi:Stack"]
    boots = {f"{node['name']}-domain": NodeBoot(node["name"], node["ip"]) for node in nodes}

    def on_event(event: auto.EngineEvent) -> None:
        outputs = event.res_outputs_event
        if outputs is not None and outputs.metadata.type == DOMAIN_TYPE:
            boot = boots.get(outputs.metadata.urn.rsplit("::", 1)[1])
            if boot is not None and not boot.running_at:
                boot.running_at = time.monotonic()
                threading.Thread(target=watch, args=(boot, key), daemon=True).start()

    started = time.monotonic()
    try:
        with deadline(BOOT_SECONDS, f"pulumi up --target (boot of {count} nodes)"):
            stack.up(target=targets, on_event=on_event)
        for boot in boots.values():
            if not boot.running_at:
                boot.error, boot.running_at = "the engine reported no domain", started
                boot.done.set()
            if not boot.done.wait(BOOT_SECONDS):
                boot.error = f"still booting after {BOOT_SECONDS} s"
    finally:
        with deadline(BOOT_SECONDS, "pulumi destroy"):
            stack.destroy()
    for boot in boots.values():
        print(f"  {boot.name}: domain running {boot.running_at - started:5.1f} s after `up` started; "
              f"SSH ready {seconds(boot.ssh_seconds)}, cloud-init done {seconds(boot.cloud_init_seconds)} later"
              + (f"  ({boot.error})" if boot.error else ""), flush=True)  # fmt: skip
    return list(boots.values())


def seconds(value: float | None) -> str:
    return f"{value:5.1f} s" if value is not None else "    - "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[len(LAB_NODES)], help="cluster sizes to boot (default: the lab stack's 2)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    results: dict[int, list[list[NodeBoot]]] = {count: [] for count in args.nodes}
    with bench_lab("boot") as lab:
        key = lab.work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-boot", "-f", str(key)], check=True)
        for round_number in range(1, args.rounds + 1):
            for count in args.nodes:  # sizes alternate within a round, so drift in machine load hits each alike
                print(f"round {round_number}, {count} node(s) booting together:", flush=True)
                results[count].append(boot_round(lab, count, f"boot-{count}-{round_number}", key))
    for count, rounds in results.items():
        slowest_ssh = [max(b.ssh_seconds for b in r) for r in rounds if all(b.ssh_seconds is not None for b in r)]
        slowest_done = [max(b.cloud_init_seconds for b in r) for r in rounds if all(b.cloud_init_seconds is not None for b in r)]
        if slowest_ssh and slowest_done:
            print(f"{count} node(s), median over {len(rounds)} round(s) of the slowest node: domain running -> SSH ready "
                  f"{statistics.median(slowest_ssh):.1f} s, -> cloud-init done {statistics.median(slowest_done):.1f} s")  # fmt: skip
        else:
            print(f"{count} node(s): no complete round (see the errors above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
