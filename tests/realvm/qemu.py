"""Boot throw-away QEMU guests from the cached image and reach them over SSH.

Each node gets a qcow2 overlay on the shared base image, a NoCloud ``cidata`` seed ISO made
from the caller's rendered user-data / meta-data / network-config, a serial console log, and
one virtio NIC. The NIC sits on the node network served by ``l2hub`` (see there for why the
switch, and not a QEMU hub, joins the NIC to slirp). SSH goes through a slirp port forward
bound to 127.0.0.1 only, aimed at the node's static address, so an SSH login proves the
netplan configuration took effect.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .accel import Accel, detect_accel
from .image import GuestImage
from .l2hub import HubPort, L2Hub, die_with_parent, is_slirp_mac, stop_process
from .node import NodeError, RunningNode

SEED_FILES = ("user-data", "meta-data", "network-config")


@dataclass(frozen=True)
class NodeBoot:
    """What the caller renders for one VM, as the Pulumi program would for libvirt."""

    name: str
    mac: str
    ip: str
    seed: Mapping[str, str]  # "user-data", "meta-data", "network-config"
    memory_mib: int = 1024
    vcpus: int = 1


@contextmanager
def boot_nodes(
    image: GuestImage,
    nodes: Sequence[NodeBoot],
    network_cidr: str,
    gateway: str,
    workdir: Path,
    *,
    ssh_key: Path,
    ssh_user: str = "ubuntu",
    ssh_timeout: float = 360.0,
    accel: Accel | None = None,
) -> Iterator[list[RunningNode]]:
    """Boot ``nodes`` concurrently, wait until each accepts SSH, yield them, then tear everything down.

    Serial and QEMU logs stay in ``workdir/<name>/``; overlays, seed ISOs and sockets are deleted.
    """
    network = ipaddress.ip_network(network_cidr)
    _validate(nodes, network, gateway)
    accel = accel or detect_accel(image)
    workdir = Path(workdir).resolve()
    # unix socket paths are limited to 108 bytes, so they live in a short temp dir, not in workdir
    sockets = Path(tempfile.mkdtemp(prefix="realvm-net-"))
    ports = [HubPort(n.name, sockets / f"{n.name}-nic", sockets / f"{n.name}-nat") for n in nodes]
    node_dirs = [workdir / n.name for n in nodes]
    processes: list[subprocess.Popen[bytes]] = []
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, sockets, ignore_errors=True)
        for node_dir in node_dirs:
            cleanup.callback(_remove_disks, node_dir)
        cleanup.callback(_stop_all, processes)  # callbacks run last-first: QEMU stops before its disks go
        workdir.mkdir(parents=True, exist_ok=True)
        hub = cleanup.enter_context(L2Hub(sockets / "hub", ports, log_path=workdir / "l2hub.log"))
        pending = []
        for node, port, node_dir in zip(nodes, ports, node_dirs, strict=True):
            _fresh_dir(node_dir)
            ssh_port = _free_port()
            command = _qemu_command(image, node, accel, node_dir, _prepare_disks(image, node, node_dir), port, hub.hub_socket, network, gateway, ssh_port)
            started = time.monotonic()
            with open(node_dir / "qemu.log", "ab") as qemu_log:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log, preexec_fn=die_with_parent)
            processes.append(process)
            pending.append(
                RunningNode(
                    name=node.name,
                    ip=node.ip,
                    ssh_port=ssh_port,
                    serial_log=node_dir / "serial.log",
                    pid=process.pid,
                    ssh_key=Path(ssh_key),
                    ssh_user=ssh_user,
                    started_at=started,
                    _process=process,
                )
            )
        # Waiting is the slow part, so it happens in threads; QEMU itself was started from this
        # thread, which outlives them (die_with_parent follows the starting thread).
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(pending)) as pool:
            ready = list(pool.map(lambda n: dataclasses.replace(n, ssh_ready_seconds=n.wait_for_ssh(ssh_timeout)), pending))
        yield ready


def _validate(nodes: Sequence[NodeBoot], network: ipaddress.IPv4Network | ipaddress.IPv6Network, gateway: str) -> None:
    problems = []
    if ipaddress.ip_address(gateway) not in network:
        problems.append(f"gateway {gateway} is outside {network}")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        problems.append(f"node names are not unique: {names}")
    for node in nodes:
        if ipaddress.ip_address(node.ip) not in network or node.ip == gateway:
            problems.append(f"{node.name}: ip {node.ip} is not a host address in {network} other than the gateway")
        mac = bytes.fromhex(node.mac.replace(":", ""))
        if len(mac) != 6 or mac[0] & 1 or is_slirp_mac(mac):
            problems.append(f"{node.name}: mac {node.mac} must be a unicast MAC outside slirp's 52:55:... range")
        if set(node.seed) != set(SEED_FILES):
            problems.append(f"{node.name}: seed must have exactly {SEED_FILES}, got {sorted(node.seed)}")
    if problems:
        raise ValueError("invalid node boot specs:\n - " + "\n - ".join(problems))


@dataclass(frozen=True)
class _Disks:
    overlay: Path
    seed_iso: Path


def _prepare_disks(image: GuestImage, node: NodeBoot, node_dir: Path) -> _Disks:
    seed_dir = node_dir / "seed"
    seed_dir.mkdir()
    for name in SEED_FILES:
        (seed_dir / name).write_text(node.seed[name])
    disks = _Disks(overlay=node_dir / "overlay.qcow2", seed_iso=node_dir / "seed.iso")
    _check_run(["genisoimage", "-quiet", "-output", str(disks.seed_iso), "-volid", "cidata", "-joliet", "-rock", *(str(seed_dir / n) for n in SEED_FILES)])
    _check_run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.rootfs), str(disks.overlay)])
    return disks


def _qemu_command(
    image: GuestImage,
    node: NodeBoot,
    accel: Accel,
    node_dir: Path,
    disks: _Disks,
    port: HubPort,
    hub_socket: Path,
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    gateway: str,
    ssh_port: int,
) -> list[str]:
    def dgram(netdev_id: str, local: Path) -> str:
        return f"dgram,id={netdev_id},local.type=unix,local.path={local},remote.type=unix,remote.path={hub_socket}"

    # restrict=on: slirp forwards nothing to the host or beyond except the hostfwd below,
    # which listens on 127.0.0.1 only. ipv6=off keeps slirp from advertising a v6 router.
    slirp = f"user,id=nat,restrict=on,ipv6=off,net={network},host={gateway},hostfwd=tcp:127.0.0.1:{ssh_port}-{node.ip}:22"
    return [
        "qemu-system-x86_64", *accel.args,
        "-name", node.name, "-machine", "pc", "-m", str(node.memory_mib), "-smp", str(node.vcpus),
        # a stable per-node SMBIOS UUID, as libvirt gives every domain (kubelet reports it)
        "-uuid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"realvm:{node.name}")),
        "-nodefaults", "-display", "none",
        "-serial", f"file:{node_dir / 'serial.log'}",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.kernel_args,
        # cache=unsafe: the overlay is thrown away after the test, so flushes buy nothing
        "-drive", f"if=none,id=root,file={disks.overlay},format=qcow2,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-pci,drive=root,addr=0x4",
        "-drive", f"if=none,id=seed,file={disks.seed_iso},format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=seed,addr=0x5",
        "-device", "virtio-rng-pci,addr=0x6",  # qemu64 has no RDRAND; sshd and cloud-init want entropy early
        # PCI slot 3 is what makes the NIC ens3 under predictable interface naming;
        # romfile= drops the iPXE boot ROM, which a direct kernel boot never uses
        "-netdev", dgram("lan", port.nic_socket),
        "-device", f"virtio-net-pci,netdev=lan,mac={node.mac},addr=0x3,romfile=",
        # slirp reaches the switch through a hub (a user netdev cannot peer with a dgram one);
        # QEMU warns "hub 0 with no nics" about it, which is expected
        "-netdev", slirp,
        "-netdev", "hubport,id=nat-port,hubid=0,netdev=nat",
        "-netdev", dgram("nat-link", port.slirp_socket),
        "-netdev", "hubport,id=nat-link-port,hubid=0,netdev=nat-link",
    ]  # fmt: skip


def _stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        stop_process(process)


def _remove_disks(node_dir: Path) -> None:
    for path in (node_dir / "overlay.qcow2", node_dir / "seed.iso"):
        path.unlink(missing_ok=True)
    shutil.rmtree(node_dir / "seed", ignore_errors=True)


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for stale in ("overlay.qcow2", "seed.iso", "serial.log", "qemu.log"):
        (path / stale).unlink(missing_ok=True)
    shutil.rmtree(path / "seed", ignore_errors=True)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_run(command: Sequence[str]) -> None:
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise NodeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}")
