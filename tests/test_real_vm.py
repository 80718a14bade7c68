"""The rendered nodes on real virtual machines: the dev stack's three seeds booted under QEMU, then the node
scripts that need no internet run over SSH exactly as the stack runs them.

What this proves: the seeds the program renders (hostname, user and key, password login off, swap off, static
address by MAC, route, DNS, pinned host key) come up on a real cloud-init/netplan/systemd guest, the nodes reach
each other on the node network, and wait-for-boot, cluster-hosts, os-prep and configure-container-runtime do
what they claim, change nothing on a second run, survive a reboot and refuse bad input without touching the node.
What it cannot prove: the Ubuntu 18.04 image itself (it cannot be fetched here, so the guest is Debian 12 built
with debootstrap), package downloads (Docker, pkgs.k8s.io), kubeadm and Calico.

Networking stays inside QEMU: user-mode networking (restrict=on) on the node subnet with SSH forwarded from
127.0.0.1, and the nodes joined by a userspace switch over unix sockets (tests/realvm/l2hub.py); no bridge.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.mockrun import StackRun, run_program
from components.plan import split_invocation
from components.project_files import PROJECT_ROOT
from components.steps import command_line
from tests.realvm import GuestImage, NodeBoot, RunningNode, boot_nodes, ensure_guest_image
from tests.realvm.keys import RealKeyFactory

pytestmark = pytest.mark.realvm

NODES = {"kubernetes-master": "192.168.141.130", "kubernetes-slave1": "192.168.141.131", "kubernetes-slave2": "192.168.141.132"}
CACHE_DIR = PROJECT_ROOT / ".cache" / "realvm"
# Files the node steps manage: a second run must leave their content, mode and mtime as they were.
MANAGED_FILES = (
    "/etc/hosts", "/etc/fstab", "/etc/modules-load.d/kubeadm-libvirt.conf", "/etc/sysctl.d/99-kubeadm-libvirt.conf",
    "/etc/containerd/config.toml", "/etc/crictl.yaml",
)  # fmt: skip
SNAPSHOT = "sudo stat -c '%n %s %a %U %Y' " + " ".join(MANAGED_FILES) + " && sudo sha256sum " + " ".join(MANAGED_FILES)
MISSING_REASON = "real-VM tests need root, qemu-system-x86_64, qemu-img, debootstrap and genisoimage (.ci/run installs them)"


def _can_run() -> bool:
    tools = ("qemu-system-x86_64", "qemu-img", "debootstrap", "genisoimage", "mkfs.ext4", "ssh")
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in tools)


@pytest.fixture(scope="module", autouse=True)
def _require_qemu() -> None:
    if not _can_run():
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING_REASON)
        pytest.skip(MISSING_REASON)


@pytest.fixture(scope="module")
def stack(key_pair, tmp_path_factory: pytest.TempPathFactory) -> tuple[StackRun, RealKeyFactory]:
    keys = RealKeyFactory(tmp_path_factory.mktemp("host-keys"))
    run = run_program(
        "dev",
        overrides={"sshPublicKey": key_pair.public_key, "sshPrivateKey": key_pair.private_key},
        secret_keys=["sshPrivateKey"],
        key_factory=keys,
    )
    return run, keys


@pytest.fixture(scope="module")
def guest_image() -> GuestImage:
    return ensure_guest_image(CACHE_DIR)


@pytest.fixture(scope="module")
def nodes(stack, guest_image: GuestImage, key_pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningNode]]:
    run, _ = stack
    boots = []
    for name, ip in NODES.items():
        mac = run.named(f"{name}-domain").input("networkInterfaces")[0]["mac"]
        boots.append(NodeBoot(name=name, mac=mac, ip=ip, seed=run.seed_files(name)))
    workdir = tmp_path_factory.mktemp("vms")
    with boot_nodes(guest_image, boots, "192.168.141.0/24", "192.168.141.1", workdir, ssh_key=key_pair.private_key_path) as running:
        for node in running:
            settle(node)
            print(f"{node.name}: SSH ready {node.ssh_ready_seconds:.1f} s, cloud-init done "
                  f"{time.monotonic() - node.started_at:.1f} s after QEMU started")  # fmt: skip
        yield {node.name: node for node in running}


def settle(node: RunningNode, timeout: float = 600.0) -> None:
    """Wait for cloud-init to finish. sshd restarts once during first boot (cloud-init applies ssh_pwauth), so a
    connection may be reset (ssh exits 255): retry that, within a bound, like the stack's dial retries do."""
    deadline = time.monotonic() + timeout
    while True:
        result = node.ssh("cloud-init status --wait >/dev/null; cloud-init status", timeout=timeout)
        if result.returncode != 255:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.name}: SSH kept failing while cloud-init ran: {result.stderr}\n{node.serial_tail()}")
        time.sleep(2)


def step_command(run: StackRun, node: str, step: str, part: str | None = None) -> str:
    """The `create` command the stack sends for a step; `part` picks one script of a multi-script step."""
    create = run.named(f"{node}-{step}").input("create")
    if part is None:
        return create
    (chosen,) = [p for p in split_invocation(create) if p[0] == part]
    return command_line(*chosen)


def run_step(node: RunningNode, command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return node.ssh(command, stdin=stdin, timeout=600)


# --- the seed -------------------------------------------------------------------------------------


def test_hostname_static_address_route_and_dns(nodes: dict[str, RunningNode]) -> None:
    for name, node in nodes.items():
        ip = NODES[name]
        assert node.ssh("hostname", check=True).stdout.strip() == name
        assert node.ssh("cat /etc/hostname", check=True).stdout.strip() == name
        address = node.ssh("ip -4 -o addr show dev ens3", check=True).stdout
        assert f"inet {ip}/24 " in address, address
        route = node.ssh("ip -4 route show default", check=True).stdout
        assert re.search(r"default via 192\.168\.141\.1 dev ens3", route), route
        mac = node.ssh("cat /sys/class/net/ens3/address", check=True).stdout.strip()
        assert mac.startswith("52:54:00:")
        dns = node.ssh("networkctl status ens3 --no-pager", check=True).stdout
        assert re.search(r"DNS: 192\.168\.141\.1", dns), dns


def test_cloud_init_finished_without_errors(nodes: dict[str, RunningNode]) -> None:
    for node in nodes.values():
        status = node.ssh("cloud-init status --long", check=False).stdout
        assert "status: done" in status, status
        result = yaml.safe_load(node.ssh("sudo cat /var/lib/cloud/data/result.json", check=True).stdout)
        assert result["v1"]["errors"] == [], result


def test_login_is_key_only_with_passwordless_sudo(nodes: dict[str, RunningNode]) -> None:
    node = nodes["kubernetes-slave1"]
    assert node.ssh("sudo -n true").returncode == 0
    assert "passwordauthentication no" in node.ssh("sudo sshd -T", check=True).stdout
    refused = subprocess.run(
        ["ssh", "-p", str(node.ssh_port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "ubuntu@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr, refused.stderr


def test_guest_presents_exactly_the_rendered_host_key(nodes: dict[str, RunningNode], stack, tmp_path: Path, key_pair) -> None:
    _, keys = stack
    for name, node in nodes.items():
        offered = scan_host_keys(node)
        rendered = " ".join(keys.public[f"{name}-host-key"].split()[:2])
        assert offered == {rendered}, f"{name} offers {offered}, the stack pinned {rendered}"

    def connect(known_host_key: str) -> subprocess.CompletedProcess[str]:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{node.ssh_port} {known_host_key}\n")
        return subprocess.run(
            ["ssh", "-i", str(key_pair.private_key_path), "-p", str(node.ssh_port), "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
             "ubuntu@127.0.0.1", "true"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    node = nodes["kubernetes-master"]
    assert connect(keys.public["kubernetes-master-host-key"]).returncode == 0
    mismatch = connect(keys.public["kubernetes-slave1-host-key"])  # another node's key: what a wrong VM would show
    assert mismatch.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in mismatch.stderr, mismatch.stderr


def scan_host_keys(node: RunningNode, timeout: float = 120.0) -> set[str]:
    """The host keys the guest offers ("type base64"). Three TCG guests on two cores can be slow to answer a
    key exchange, so an empty scan is retried within a bound rather than taken as "no key"."""
    deadline = time.monotonic() + timeout
    while True:
        scanned = subprocess.run(
            ["ssh-keyscan", "-p", str(node.ssh_port), "-T", "30", "127.0.0.1"], capture_output=True, text=True, timeout=90
        ).stdout
        offered = {" ".join(line.split()[1:3]) for line in scanned.splitlines() if line and not line.startswith("#")}
        if offered or time.monotonic() > deadline:
            return offered
        time.sleep(2)


# --- the node scripts -----------------------------------------------------------------------------


def test_wait_for_boot_returns_once_cloud_init_is_done(nodes: dict[str, RunningNode], stack) -> None:
    run, _ = stack
    for name, node in nodes.items():
        result = run_step(node, step_command(run, name, "wait-for-boot"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("boot complete: cloud-init done"), result.stdout


def test_node_preparation_works_and_a_second_run_changes_nothing(nodes: dict[str, RunningNode], stack) -> None:
    run, _ = stack
    for name, node in nodes.items():
        # A swap file in fstab, as on Ubuntu installer images: os-prep must turn it off for good.
        node.ssh(
            "sudo sh -c 'test -e /swapfile || { fallocate -l 32M /swapfile && chmod 600 /swapfile && mkswap -q /swapfile"
            " && echo \"/swapfile none swap sw 0 0\" >> /etc/fstab; } && swapon /swapfile'",
            check=True,
        )
        assert node.ssh("tail -n +2 /proc/swaps", check=True).stdout.strip()
        commands = [
            step_command(run, name, "cluster-hosts"),
            step_command(run, name, "os-prep"),
            # The runtime is preinstalled in the guest (Debian's containerd); installing Docker needs the internet.
            step_command(run, name, "container-runtime", part="configure-container-runtime"),
        ]
        for command in commands:
            result = run_step(node, command)
            assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
        first = node.ssh(SNAPSHOT, check=True).stdout
        for command in commands:
            result = run_step(node, command)
            assert result.returncode == 0, f"{name} (second run): {result.stdout}\n{result.stderr}"
        assert node.ssh(SNAPSHOT, check=True).stdout == first, f"{name}: the second run changed a managed file"
        assert_node_prepared(node)


def assert_node_prepared(node: RunningNode) -> None:
    assert node.ssh("tail -n +2 /proc/swaps", check=True).stdout.strip() == "", "swap is still on"
    fstab = node.ssh("cat /etc/fstab", check=True).stdout
    assert re.search(r"^#/swapfile none swap", fstab, re.MULTILINE), fstab
    modules = node.ssh("sudo lsmod", check=True).stdout
    for module in ("br_netfilter", "overlay", "ip_vs", "ip_vs_rr", "nf_conntrack"):
        assert re.search(rf"^{module}\s", modules, re.MULTILINE), f"{module} not loaded"
    sysctls = node.ssh("sudo sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables", check=True)
    assert sysctls.stdout.split() == ["1", "1", "1"]
    hosts = node.ssh("cat /etc/hosts", check=True).stdout
    for name, ip in NODES.items():
        assert f"{ip} {name}" in hosts
    config = node.ssh("sudo cat /etc/containerd/config.toml", check=True).stdout
    assert "SystemdCgroup = true" in config and 'sandbox_image = "registry.k8s.io/pause:3.10.1"' in config
    # crictl is not packaged in Debian 12; containerd's own client shows the CRI plugin serving.
    plugins = node.ssh("sudo ctr plugins ls", check=True).stdout
    assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+.*\bok\b", plugins), plugins


def test_nodes_reach_each_other_by_name_and_address(nodes: dict[str, RunningNode]) -> None:
    for name, node in nodes.items():
        for other, ip in NODES.items():
            if other == name:
                continue
            for target in (ip, other):
                result = node.ssh(f"ping -c 1 -W 5 {target}", timeout=60)
                assert result.returncode == 0, f"{name} cannot reach {target}: {result.stdout}{result.stderr}"
                assert f"({ip})" in result.stdout or f"from {ip}" in result.stdout


def test_preparation_survives_a_reboot(nodes: dict[str, RunningNode]) -> None:
    node = nodes["kubernetes-slave1"]
    seconds = node.reboot_and_wait()
    print(f"kubernetes-slave1: back after reboot in {seconds:.1f} s")
    assert node.ssh("hostname", check=True).stdout.strip() == "kubernetes-slave1"
    assert node.ssh("cat /etc/hostname", check=True).stdout.strip() == "kubernetes-slave1"
    assert "inet 192.168.141.131/24 " in node.ssh("ip -4 -o addr show dev ens3", check=True).stdout
    assert_node_prepared(node)


def test_bad_input_fails_clearly_and_leaves_the_node_as_it_was(nodes: dict[str, RunningNode], stack) -> None:
    run, _ = stack
    node = nodes["kubernetes-slave2"]
    before = node.ssh(SNAPSHOT, check=True).stdout
    bad_runs = {
        "os-prep": (step_command(run, "kubernetes-slave2", "os-prep").replace("KUBE_PROXY_MODE=ipvs", "KUBE_PROXY_MODE=nftables"), "KUBE_PROXY_MODE=nftables"),
        "cluster-hosts": (re.sub(r"CLUSTER_HOSTS='[^']*'", "CLUSTER_HOSTS='300.1.1.1 bad_name'", step_command(run, "kubernetes-slave2", "cluster-hosts")), "300.1.1.1"),
        "kubeadm-join": (step_command(run, "kubernetes-slave2", "kubeadm-join").replace("NODE_NAME=kubernetes-slave2", "NODE_NAME="), "NODE_NAME"),
    }  # fmt: skip
    for step, (command, named) in bad_runs.items():
        started = time.monotonic()
        result = run_step(node, command)
        assert result.returncode == 2, f"{step}: exit {result.returncode}\n{result.stderr}"
        assert "invalid input" in result.stderr and named in result.stderr, f"{step}: {result.stderr}"
        assert time.monotonic() - started < 60, f"{step} waited before refusing its input"
    assert node.ssh(SNAPSHOT, check=True).stdout == before, "a refused run changed the node"
