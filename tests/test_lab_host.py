"""The lab host (lab/host.py): libvirtd and virtlogd in a network namespace of their own.

The pure parts (prerequisite messages, names, paths, argv) are tested everywhere. The `labhost` tests start real lab
hosts as root: a NAT network whose bridge must exist only inside the namespace, a tiny TCG domain that must really
run QEMU, a volume in the `default` pool; then stop must leave nothing (namespace, processes, bridge, directories),
also after the daemons were killed with SIGKILL. They skip when not root; with CI=true, missing prerequisites fail.
No traffic leaves the namespace: the guest boots nothing and nothing is sent to its network.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import host as labhost
from lab.errors import LabError
from lab.stacks import LAB_NODES

# Per process: two runs of the suite on one machine must not stop each other's lab hosts.
NAME = f"pt{os.getpid()}"
SECOND = f"pt{os.getpid()}b"
BRIDGE = "kvlbr-pytest"
NETWORK_NAME = "pytest-nat"
DOMAIN_NAME = "pytest-tiny"

# The lab's node network as a NAT network; the bridge exists only inside the lab host's namespace.
NETWORK_XML = """\
<network>
  <name>pytest-nat</name>
  <forward mode='nat'/>
  <bridge name='kvlbr-pytest' stp='on' delay='0'/>
  <ip address='192.168.141.1' netmask='255.255.255.0'/>
</network>
"""

# The smallest domain that proves QEMU runs under TCG: no disk, 64 MiB, one NIC on the network, boots nothing.
DOMAIN_XML = """\
<domain type='qemu'>
  <name>pytest-tiny</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'><source network='pytest-nat'/><model type='virtio'/></interface>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
"""


# --- pure parts ---------------------------------------------------------------------------------------------------


def test_missing_command_names_its_apt_package() -> None:
    absent = ("libvirtd", "virtlogd", "dnsmasq")
    missing = labhost.missing_prerequisites(which=lambda cmd: None if cmd in absent else "/usr/bin/" + cmd, euid=0)
    assert missing == ["libvirtd, virtlogd, dnsmasq (apt-get install libvirt-daemon-system dnsmasq-base)"]
    message = labhost.prerequisite_message(missing)
    assert "\n" not in message
    assert "libvirtd" in message and "apt-get install libvirt-daemon-system dnsmasq-base" in message


@pytest.mark.parametrize(
    ("command", "package"),
    [(p.what, p.package) for p in labhost.PREREQUISITES],
)
def test_each_prerequisite_names_its_package(command: str, package: str) -> None:
    missing = labhost.missing_prerequisites(which=lambda cmd: None if cmd == command else "/bin/" + cmd, euid=0)
    assert missing == [f"{command} (apt-get install {package})"]


def test_everything_present_as_root_is_nothing_missing() -> None:
    assert labhost.missing_prerequisites(which=lambda cmd: "/bin/" + cmd, euid=0) == []


def test_not_root_and_broken_netns_are_named() -> None:
    missing = labhost.missing_prerequisites(which=lambda cmd: "/bin/" + cmd, euid=1000, netns_works=False)
    assert len(missing) == 2
    assert missing[0].startswith("root")
    assert "ip netns" in missing[1] and "iproute2" in missing[1]


@pytest.mark.parametrize("name", ["lab", "remote-1", "a", "x" * 20])
def test_valid_names(name: str) -> None:
    assert labhost.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Lab", "-lab", "lab/../x", "a b", "x" * 21])
def test_invalid_names(name: str) -> None:
    with pytest.raises(LabError):
        labhost.validate_name(name)


def test_paths_uri_env_and_exec_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_DATA", str(tmp_path / "data"))
    h = labhost.host("remote")
    assert h.namespace == "kvl-remote"
    assert h.state_dir == tmp_path / "run" / "remote"
    assert h.pool_dir == tmp_path / "data" / "remote" / "pool"
    assert h.uri == f"qemu+unix:///system?socket={tmp_path}/run/remote/run/libvirt-sock"
    environment = labhost.env("remote")
    assert environment["LIBVIRT_DEFAULT_URI"] == h.uri
    assert environment["KUBEADM_LIBVIRT_LAB_NETNS"] == "kvl-remote"
    argv = labhost.exec_argv("remote", ["pulumi", "up", "--yes"])
    assert [Path(argv[0]).name, *argv[1:4], Path(argv[4]).name] == ["ip", "netns", "exec", "kvl-remote", "env"]
    assert f"LIBVIRT_DEFAULT_URI={h.uri}" in argv
    assert argv[-3:] == ["pulumi", "up", "--yes"]


def test_uri_quotes_odd_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_RUN", "/tmp/a b&c")
    assert labhost.host("lab").uri == "qemu+unix:///system?socket=/tmp/a%20b%26c/lab/run/libvirt-sock"


def test_launch_script_mounts_every_libvirt_dir_from_the_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_RUN", str(tmp_path))
    h = labhost.host("lab")
    script = labhost.launch_script(h)
    for target in ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt"):
        assert f" {target}\n" in script
    assert f"mount --bind {tmp_path}/lab/run /run/libvirt" in script
    assert script.index("virtlogd --daemon") < script.index("libvirtd --daemon")
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_qemu_conf_runs_guests_as_root_unconfined() -> None:
    settings = dict(
        line.split(" = ", 1) for line in labhost.QEMU_CONF.splitlines() if line and not line.startswith("#")
    )
    assert settings["user"] == '"root"' and settings["group"] == '"root"'
    assert settings["security_driver"] == '"none"'
    assert settings["dynamic_ownership"] == "0"


def test_the_favoured_domains_are_the_lab_stacks_control_planes() -> None:
    assert set(labhost.FAVOURED_DOMAINS) == {node["name"] for node in LAB_NODES if node["role"] == "control-plane"}


def test_missing_prerequisites_create_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(labhost, "_SEARCH_PATH", str(tmp_path / "empty"))
    with pytest.raises(LabError) as raised:
        labhost.start("nothing")
    assert "apt-get install" in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
    assert not Path("/run/netns/kvl-nothing").exists()


# --- real lab hosts -----------------------------------------------------------------------------------------------


def _require_lab_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab host needs root (network namespaces, libvirtd)")
    try:
        labhost.check_prerequisites()
    except LabError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def lab_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """State and pool of the test's lab hosts in a temporary directory; whatever a failed test left is stopped."""
    _require_lab_host()
    root = tmp_path_factory.mktemp("lab")
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_RUN", str(root / "run"))
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_DATA", str(root / "data"))
    for name in (NAME, SECOND, *_abandoned_test_hosts()):
        labhost.stop(name)
    try:
        yield root
    finally:
        for name in (NAME, SECOND):
            labhost.stop(name)


def _abandoned_test_hosts() -> list[str]:
    """Lab hosts of test runs whose process died before its teardown (their namespaces are named after the pid)."""
    names = []
    for entry in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        match = re.fullmatch(r"kvl-(pt(\d+)b?)", entry)
        if match and not _running(int(match.group(2))):
            names.append(match.group(1))
    return names


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _virsh(h: labhost.LabHost, *args: str) -> str:
    done = _run(["virsh", "-q", "-c", h.uri, *args])
    assert done.returncode == 0, f"virsh {' '.join(args)}: {done.stderr}"
    return done.stdout


def _define_from(h: labhost.LabHost, tmp: Path, command: str, xml: str) -> None:
    path = tmp / f"{command}.xml"
    path.write_text(xml)
    _virsh(h, command, str(path))


def _running(pid: int) -> bool:
    """Alive and not a zombie (in a container pid 1 may be slow to reap the daemons)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pid(path: Path) -> int:
    return int(path.read_text().strip())


def _autogroup_nice(pid: int) -> int:
    """The nice of the process's scheduler autogroup (/proc/PID/autogroup reads "/autogroup-N nice K")."""
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def _root_links() -> str:
    return _run(["ip", "-br", "addr"]).stdout


def _assert_gone(h: labhost.LabHost, pids: list[int]) -> None:
    assert not Path("/run/netns", h.namespace).exists()
    assert h.namespace not in _run(["ip", "netns", "list"]).stdout
    assert [p for p in pids if _running(p)] == []
    assert BRIDGE not in _root_links()
    assert not h.state_dir.exists()
    assert not h.data_dir.exists()
    assert not labhost.status(h.name).leftovers


@pytest.mark.labhost
def test_lab_host_runs_network_domain_and_pool_in_its_namespace_and_stop_removes_all(lab_env: Path) -> None:
    began = time.monotonic()
    h = labhost.start(NAME)
    started = time.monotonic() - began
    state = labhost.status(NAME)
    assert state.running, state.summary()
    assert labhost.start(NAME) == h and labhost.status(NAME).libvirtd_pid == state.libvirtd_pid  # idempotent
    _virsh(h, "pool-destroy", "default")
    assert labhost.start(NAME) == h and _virsh(h, "pool-list", "--name").split() == ["default"]  # repairs the pool
    assert labhost.status(NAME).libvirtd_pid == state.libvirtd_pid
    assert _virsh(h, "list", "--all").strip() == ""
    assert _virsh(h, "pool-list", "--name").split() == ["default"]

    _define_from(h, lab_env, "net-define", NETWORK_XML)
    _virsh(h, "net-start", NETWORK_NAME)
    inside = _run(["ip", "-n", h.namespace, "-br", "addr"]).stdout
    assert any(line.split()[0] == BRIDGE and "192.168.141.1/24" in line for line in inside.splitlines()), inside
    assert BRIDGE not in _root_links()

    _define_from(h, lab_env, "define", DOMAIN_XML)
    _virsh(h, "start", DOMAIN_NAME)
    assert _virsh(h, "domstate", DOMAIN_NAME).strip() == "running"
    qemu = _pid(h.run_dir / "qemu" / f"{DOMAIN_NAME}.pid")
    assert _running(qemu)
    assert os.stat(f"/proc/{qemu}/ns/net").st_ino == os.stat(f"/run/netns/{h.namespace}").st_ino
    dnsmasq = _pid(h.run_dir / "network" / f"{NETWORK_NAME}.pid")
    # libvirt's qemu hook: the favoured domain's QEMU runs in an autogroup of nice -5, any other at 0.
    favoured = labhost.FAVOURED_DOMAINS[0]
    _define_from(h, lab_env, "define", DOMAIN_XML.replace(f"<name>{DOMAIN_NAME}</name>", f"<name>{favoured}</name>"))
    _virsh(h, "start", favoured)
    favoured_qemu = _pid(h.run_dir / "qemu" / f"{favoured}.pid")
    assert _autogroup_nice(favoured_qemu) == labhost.FAVOURED_NICE == -5
    assert _autogroup_nice(qemu) == 0

    _virsh(h, "vol-create-as", "default", "tiny.qcow2", "16M", "--format", "qcow2")
    assert (h.pool_dir / "tiny.qcow2").is_file()

    # exec_argv: a command inside the namespace, with the URI from env(): it sees the bridge and the domain.
    assert BRIDGE in _run(labhost.exec_argv(NAME, ["ip", "-br", "link"])).stdout
    assert sorted(_run(labhost.exec_argv(NAME, ["virsh", "-q", "list", "--name"])).stdout.split()) == sorted([DOMAIN_NAME, favoured])

    pids = [state.libvirtd_pid, state.virtlogd_pid, qemu, favoured_qemu, dnsmasq]
    began = time.monotonic()
    labhost.stop(NAME)
    stopped = time.monotonic() - began
    _assert_gone(h, [p for p in pids if p is not None])
    print(f"lab host start {started:.2f} s, stop with a running domain {stopped:.2f} s")
    labhost.stop(NAME)  # idempotent
    _assert_gone(h, [])


@pytest.mark.labhost
def test_start_after_a_crash_cleans_up_and_stop_is_idempotent(lab_env: Path) -> None:
    h = labhost.start(NAME)
    _define_from(h, lab_env, "net-define", NETWORK_XML)
    _virsh(h, "net-start", NETWORK_NAME)
    _define_from(h, lab_env, "define", DOMAIN_XML)
    _virsh(h, "start", DOMAIN_NAME)
    qemu = _pid(h.run_dir / "qemu" / f"{DOMAIN_NAME}.pid")
    daemons = [_pid(h.libvirtd_pid_file), _pid(h.virtlogd_pid_file)]
    for pid in daemons:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in daemons) and time.monotonic() < deadline:
        time.sleep(0.1)
    crashed = labhost.status(NAME)
    assert not crashed.running and crashed.leftovers
    assert _running(qemu)  # QEMU outlives its libvirtd

    began = time.monotonic()
    h = labhost.start(NAME)
    restarted = time.monotonic() - began
    assert labhost.status(NAME).running
    assert not _running(qemu)
    assert _virsh(h, "list", "--all", "--name").strip() == ""  # a fresh host: nothing of the crashed one
    assert _virsh(h, "net-list", "--all", "--name").strip() == ""
    print(f"lab host start after a crash {restarted:.2f} s")

    labhost.stop(NAME)
    labhost.stop(NAME)
    _assert_gone(h, [*daemons, qemu])

    # After a crash with the daemons already gone, stop alone cleans up as well.
    h = labhost.start(NAME)
    daemons = [_pid(h.libvirtd_pid_file), _pid(h.virtlogd_pid_file)]
    for pid in daemons:
        os.kill(pid, signal.SIGKILL)
    labhost.stop(NAME)
    _assert_gone(h, daemons)


@pytest.mark.labhost
def test_two_lab_hosts_are_independent(lab_env: Path) -> None:
    first = labhost.start(NAME)
    second = labhost.start(SECOND)
    assert first.socket != second.socket and first.namespace != second.namespace
    # The same network (name, bridge, subnet) in both: each lives in its own namespace and its own libvirtd.
    for h in (first, second):
        _define_from(h, lab_env, "net-define", NETWORK_XML)
        _virsh(h, "net-start", NETWORK_NAME)
        assert BRIDGE in _run(["ip", "-n", h.namespace, "-br", "link"]).stdout
    _define_from(first, lab_env, "define", DOMAIN_XML)
    assert _virsh(first, "list", "--all", "--name").split() == [DOMAIN_NAME]
    assert _virsh(second, "list", "--all", "--name").split() == []
    labhost.stop(SECOND)
    assert labhost.status(NAME).running
    assert _virsh(first, "net-list", "--name").split() == [NETWORK_NAME]
    labhost.stop(NAME)
    _assert_gone(first, [])
    _assert_gone(second, [])
