"""A lab host: libvirtd and virtlogd of their own, inside a network namespace of their own.

Everything the lab's VMs touch lives in the network namespace `kvl-<name>`: libvirt's bridges, its dnsmasq, its
NAT rules, the QEMU processes. Nothing is added to the root namespace's network. Several lab hosts can exist side by
side (the default one is called "lab"; a second can play a remote host), each with its own namespace and daemons.

How the daemons are kept apart from a system libvirtd and from each other
    libvirtd runs as the ordinary privileged (`qemu:///system`) daemon, whose paths are compiled in, so each lab host
    starts its daemons inside a private mount namespace (`ip netns exec kvl-<name> unshare --mount --propagation
    private`) where the lab's own directories are bind-mounted over libvirt's:

        <state>/etc   -> /etc/libvirt        libvirtd.conf, virtlogd.conf, qemu.conf written by this module;
                                             domain, network and pool definitions
        <state>/run   -> /run/libvirt        the sockets (libvirt-sock, virtlogd-sock), pid files of the daemons,
                                             of each QEMU (qemu/) and each dnsmasq (network/)
        <state>/lib   -> /var/lib/libvirt    dnsmasq leases, QEMU's per-domain state
        <state>/log   -> /var/log/libvirt    the daemons' logs and each guest's console log (qemu/<domain>.log)
        <cache>       -> /var/cache/libvirt  QEMU capability probes, kept across runs and shared by lab hosts:
                                             without them libvirtd probes QEMU for ~8 s before it answers

    with <state> = host_state_root()/<name> (/run/kubeadm-libvirt-lab/<name>) and <cache> = cache_root()/libvirt
    (/var/cache/kubeadm-libvirt-lab/libvirt; libvirt rewrites those files atomically and checks them against the
    QEMU binary, so sharing is safe). The private propagation keeps those mounts out of the root mount namespace: a
    system libvirtd, if any, still sees its own files. What stays in the root file system after stop: that cache and
    an empty /run/libvirt mount point, created when missing (Debian's package makes the other mount points).

    The `default` storage pool is a dir pool on disk, host_data_root()/<name>/pool
    (/var/lib/kubeadm-libvirt-lab/<name>/pool): /run is often a tmpfs and guest images are large.

How clients connect: the URI scheme
    `qemu+unix:///system?socket=<state>/run/libvirt-sock` reaches the lab's libvirtd from any namespace: the socket is
    a plain file in the root mount namespace. virsh (libvirt's own client) honours `socket=`; so does pulumi-libvirt:
    terraform-provider-libvirt's go-libvirt transport (libvirt/uri/unix.go) dials the `socket` query parameter of a
    `+unix` (or host-less) URI and sends `qemu:///system` as the name to open. Set the stack's `libvirt:uri` to
    LabHost.uri (env() also exports it as LIBVIRT_DEFAULT_URI, the provider's fallback).

    libvirt does not need the namespace, but the guests' network does: the Pulumi CLI (pulumi-command's SSH
    connections to 192.168.141.x) and anything else that talks to the guests must run inside the network namespace,
    through exec_argv(name, argv) (`ip netns exec kvl-<name> env LIBVIRT_DEFAULT_URI=... argv`). Prepare virtualenvs
    and downloads before: the namespace has no route out, by design.

Why qemu.conf says what it says: see QEMU_CONF.

API: start(name) -> LabHost (idempotent; cleans a crashed earlier run first), stop(name) (idempotent; works after a
crash), status(name) -> HostStatus, env(name) -> dict, exec_argv(name, argv) -> list, run(name, argv, **kw),
check_prerequisites(); LabHost(name) gives the paths, the URI and virsh() without starting anything.
Debian packages the host needs: see PREREQUISITES (libvirt-daemon-system, libvirt-clients, qemu-system-x86,
qemu-utils, dnsmasq-base, iptables, genisoimage, iproute2, util-linux).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lab.errors import LabError
from lab.netns import NETNS_DIR
from lab.paths import cache_root, host_data_root, host_state_root

DEFAULT_NAME = "lab"
NAMESPACE_PREFIX = "kvl-"
POOL_NAME = "default"

# Bounded waits (seconds). libvirtd answers in about a second; its shutdown takes up to a few seconds.
DAEMON_READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0
VIRSH_TIMEOUT = 60.0

# Lab host names become part of a namespace name and of paths: keep them short and plain.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")

# The state directory's parts and where each is mounted inside the daemons' mount namespace (the cache: see
# LabHost.bind_mounts).
STATE_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
)
# A unix socket path is at most 107 bytes (sun_path).
MAX_SOCKET_PATH = 107

LIBVIRTD_CONF = """\
# Written by lab/host.py for one lab host. This file is /etc/libvirt/libvirtd.conf only inside the lab host's
# private mount namespace. Unix sockets only (no TCP/TLS listener: the default), for root only.
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
# No polkit: there is no D-Bus here, and only root can open the sockets anyway.
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

VIRTLOGD_CONF = """\
# Written by lab/host.py: virtlogd keeps each guest's console log under /var/log/libvirt/qemu (the lab's log dir).
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""

QEMU_CONF = """\
# Written by lab/host.py. The lab runs on machines that are themselves containers or nested VMs.
# QEMU runs as root: the pool and the images in it belong to root, and there is no libvirt-qemu user to hand them
# to. dynamic_ownership/remember_owner off: libvirt must not chown images or keep owner xattrs (some file systems
# refuse them) - root reads them as they are.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
# No AppArmor/SELinux confinement: inside a container the profiles cannot be loaded, and a failed load stops the
# guest from starting.
security_driver = "none"
# No private /dev per guest (needs mount rights a container may lack) and no cgroups per guest (a crashed lab must
# not leave machine.slice directories behind; the lab enforces no limits).
namespaces = [ ]
cgroup_controllers = [ ]
"""


# The lab stacks' control plane (lab/stacks.py, LAB_NODES; a test keeps the two in step) gets the larger share when
# QEMUs compete for the host's cores. Each QEMU that libvirtd starts is a session of its own, hence a scheduler
# autogroup of its own, and the kernel shares the CPU equally between autogroups whatever their threads' nice
# values: on two cores a control plane with two vCPUs got about one core, as much as a worker that mostly waits for
# it, though the control plane carries the deadlines no stack setting stretches (the API server's start-up hooks).
# libvirt's qemu hook gives the favoured domains' autogroup nice -5 (weight 3121 to 1024) when they start; without
# cgroups per guest (qemu.conf) there is no cputune to do it with. Measured: the control plane's QEMU then got
# 1.3-1.4 of two cores; on the slow host where that was tried, the mission still did not pass (README).
FAVOURED_DOMAINS = ("lab-cp",)
FAVOURED_NICE = -5


def qemu_hook() -> str:
    """libvirt's qemu hook (/etc/libvirt/hooks/qemu, run by libvirtd as `qemu DOMAIN OPERATION SUB-OPERATION` with
    the domain's XML on stdin): once a favoured domain's QEMU runs, its autogroup's nice becomes FAVOURED_NICE."""
    names = " | ".join(shlex.quote(name) for name in FAVOURED_DOMAINS)
    return f"""#!/bin/sh
# Written by lab/host.py: a favoured domain's QEMU gets autogroup nice {FAVOURED_NICE} once it runs (see FAVOURED_DOMAINS).
cat >/dev/null
[ "$2 $3" = "started begin" ] || exit 0
case "$1" in {names}) ;; *) exit 0 ;; esac
pid=$(cat "/run/libvirt/qemu/$1.pid") || exit 0
echo {FAVOURED_NICE} > "/proc/$pid/autogroup" || true
"""


@dataclass(frozen=True)
class Prerequisite:
    """One thing the lab host needs: a command on PATH, and the Debian package that brings it."""

    what: str
    package: str


PREREQUISITES: tuple[Prerequisite, ...] = (
    Prerequisite("ip", "iproute2"),
    Prerequisite("unshare", "util-linux"),
    Prerequisite("mount", "mount"),
    Prerequisite("libvirtd", "libvirt-daemon-system"),
    Prerequisite("virtlogd", "libvirt-daemon-system"),
    Prerequisite("virsh", "libvirt-clients"),
    Prerequisite("qemu-system-x86_64", "qemu-system-x86"),
    Prerequisite("qemu-img", "qemu-utils"),
    Prerequisite("dnsmasq", "dnsmasq-base"),
    Prerequisite("iptables", "iptables"),
    # pulumi-libvirt's CloudInitDisk runs mkisofs in the lab host's environment.
    Prerequisite("mkisofs", "genisoimage"),
)

# Daemons look here too: sbin is not on every root PATH (for example under `env -i`).
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def missing_prerequisites(
    which: Callable[[str], str | None] | None = None, euid: int | None = None, netns_works: bool | None = None
) -> list[str]:
    """What is missing, as short phrases; the arguments replace the machine's answers (for tests)."""
    which = which or (lambda cmd: shutil.which(cmd, path=_SEARCH_PATH))
    euid = os.geteuid() if euid is None else euid
    missing: list[str] = []
    if euid != 0:
        missing.append("root (run as root: the lab host creates a network namespace)")
    absent = [p for p in PREREQUISITES if which(p.what) is None]
    if absent:
        packages = list(dict.fromkeys(p.package for p in absent))
        missing.append(f"{', '.join(p.what for p in absent)} (apt-get install {' '.join(packages)})")
    if netns_works is False:
        missing.append("`ip netns` support (apt-get install iproute2; the kernel needs network namespaces)")
    return missing


def prerequisite_message(missing: Sequence[str]) -> str:
    """One line: what the lab host lacks and how to get it."""
    return "lab host cannot start, missing: " + "; ".join(missing)


def check_prerequisites() -> None:
    """Raise LabError naming everything missing (and the apt packages) before anything is created."""
    missing = missing_prerequisites(netns_works=None)
    if not missing:
        ip = shutil.which("ip", path=_SEARCH_PATH)
        probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            missing = missing_prerequisites(netns_works=False)
    if missing:
        raise LabError(prerequisite_message(missing))


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LabError(
            f"lab host name {name!r} is not valid: use 1-20 characters a-z, 0-9 and '-', not starting with '-'"
        )
    return name



@dataclass(frozen=True)
class LabHost:
    """Where one lab host lives; computed from its name, whether it runs or not."""

    name: str

    @property
    def namespace(self) -> str:
        return NAMESPACE_PREFIX + self.name

    @property
    def state_dir(self) -> Path:
        return host_state_root() / self.name

    @property
    def data_dir(self) -> Path:
        return host_data_root() / self.name

    @property
    def pool_dir(self) -> Path:
        return self.data_dir / "pool"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def socket(self) -> Path:
        return self.run_dir / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={quote(str(self.socket), safe='/')}"

    @property
    def capability_cache(self) -> Path:
        return cache_root() / "libvirt"

    def bind_mounts(self) -> list[tuple[Path, str]]:
        """(source, target) of each bind mount in the daemons' mount namespace."""
        mounts = [(self.state_dir / part, target) for part, target in STATE_MOUNTS]
        return [*mounts, (self.capability_cache, "/var/cache/libvirt")]

    @property
    def libvirtd_pid_file(self) -> Path:
        return self.run_dir / "libvirtd.pid"

    @property
    def virtlogd_pid_file(self) -> Path:
        return self.run_dir / "virtlogd.pid"

    @property
    def launch_script(self) -> Path:
        return self.state_dir / "launch.sh"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def env(self) -> dict[str, str]:
        """What a shell (or the Pulumi CLI) needs to use this lab host."""
        return {
            "LIBVIRT_DEFAULT_URI": self.uri,
            "KUBEADM_LIBVIRT_LAB_HOST": self.name,
            "KUBEADM_LIBVIRT_LAB_NETNS": self.namespace,
        }

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside this lab host's network namespace, with env() set."""
        settings = [f"{k}={v}" for k, v in self.env().items()]
        return [_tool("ip"), "netns", "exec", self.namespace, _tool("env"), *settings, *argv]

    def virsh_argv(self, *args: str) -> list[str]:
        return ["virsh", "-q", "-c", self.uri, *args]

    def virsh(self, *args: str, check: bool = True, timeout: float = VIRSH_TIMEOUT) -> str:
        """Run virsh against this lab host's libvirtd; its stdout. A failure is a LabError with virsh's message."""
        done = _run(self.virsh_argv(*args), timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"lab host {self.name}: virsh {' '.join(args)} failed: {_one_line(done.stderr)}")
        return done.stdout


@dataclass(frozen=True)
class HostStatus:
    name: str
    namespace_exists: bool
    libvirtd_pid: int | None
    virtlogd_pid: int | None
    responding: bool
    state_dir_exists: bool
    uri: str

    @property
    def running(self) -> bool:
        """Healthy: namespace, both daemons alive, libvirtd answering on its socket."""
        daemons = self.libvirtd_pid is not None and self.virtlogd_pid is not None
        return self.namespace_exists and daemons and self.responding

    @property
    def leftovers(self) -> bool:
        """Something of this lab host exists (running or not)."""
        daemons = self.libvirtd_pid is not None or self.virtlogd_pid is not None
        return self.namespace_exists or self.state_dir_exists or daemons

    def summary(self) -> str:
        if self.running:
            pids = f"libvirtd {self.libvirtd_pid}, virtlogd {self.virtlogd_pid}"
            return f"lab host {self.name}: running ({pids}), {self.uri}"
        if self.leftovers:
            return (
                f"lab host {self.name}: not healthy (namespace {'present' if self.namespace_exists else 'absent'}, "
                f"libvirtd {self.libvirtd_pid or 'down'}, virtlogd {self.virtlogd_pid or 'down'}); `stop` cleans it"
            )
        return f"lab host {self.name}: stopped"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "running": self.running,
            "namespace_exists": self.namespace_exists,
            "libvirtd_pid": self.libvirtd_pid,
            "virtlogd_pid": self.virtlogd_pid,
            "responding": self.responding,
            "uri": self.uri,
        }


# --- public API -------------------------------------------------------------------------------------------------


def host(name: str = DEFAULT_NAME) -> LabHost:
    return LabHost(validate_name(name))


def env(name: str = DEFAULT_NAME) -> dict[str, str]:
    return host(name).env()


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    return host(name).exec_argv(argv)


def run(name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(exec_argv(name, argv), **kwargs): a command inside the lab host's network namespace."""
    return subprocess.run(exec_argv(name, argv), **kwargs)


def status(name: str = DEFAULT_NAME) -> HostStatus:
    h = host(name)
    ns_exists = _namespace_exists(h.namespace)
    libvirtd = _daemon_pid(h, h.libvirtd_pid_file, "libvirtd")
    virtlogd = _daemon_pid(h, h.virtlogd_pid_file, "virtlogd")
    responding = False
    if libvirtd is not None and h.socket.exists() and shutil.which("virsh", path=_SEARCH_PATH):
        responding = _run(h.virsh_argv("version"), timeout=30).returncode == 0
    return HostStatus(h.name, ns_exists, libvirtd, virtlogd, responding, h.state_dir.exists(), h.uri)


def start(name: str = DEFAULT_NAME) -> LabHost:
    """Start the lab host (namespace, virtlogd, libvirtd, the `default` pool); return it if it already runs.

    A crashed earlier run (namespace, stray processes or state left) is cleaned first. On any failure, what this
    call made is removed again before the LabError propagates."""
    h = host(name)
    check_prerequisites()
    current = status(name)
    if current.running:
        _define_pool(h)  # a no-op unless someone removed or stopped the pool
        return h
    if current.leftovers or h.data_dir.exists():
        stop(name)
    try:
        _prepare_dirs(h)
        _create_namespace(h)
        _launch_daemons(h)
        _wait_ready(h)
        _define_pool(h)
    except BaseException:
        stop(name)
        raise
    return h


def stop(name: str = DEFAULT_NAME) -> None:
    """Remove every trace of the lab host: its libvirt objects, processes, namespace, state and pool directory.

    Idempotent; works when the daemons are already gone (after a crash). Commands started in the namespace with
    exec_argv are ended too."""
    h = host(name)
    if os.geteuid() != 0 and (status(name).leftovers or h.data_dir.exists()):
        raise LabError(f"lab host {h.name}: stopping it needs root (run as root)")
    libvirtd = _daemon_pid(h, h.libvirtd_pid_file, "libvirtd")
    virtlogd = _daemon_pid(h, h.virtlogd_pid_file, "virtlogd")
    # The namespace whose processes are the lab host's: the named one, or (if someone deleted the name) the one
    # its daemons still run in. Never the namespace this process runs in: that would end the caller's neighbours.
    ns_inode = _namespace_inode(h.namespace)
    if ns_inode is None:
        ns_inode = next((_process_namespace(p) for p in (libvirtd, virtlogd) if p is not None), None)
    if ns_inode == _process_namespace(os.getpid()):
        ns_inode = None
    if libvirtd is not None and h.socket.exists() and shutil.which("virsh", path=_SEARCH_PATH):
        if _run(h.virsh_argv("version"), timeout=10).returncode == 0:
            _teardown_objects(h)
    # The daemons first (by the pids in their pid files), then whatever else still runs in the namespace: QEMU and
    # dnsmasq, which outlive a libvirtd that was killed, and commands started with exec_argv.
    _terminate([p for p in (libvirtd, virtlogd) if p is not None], what=f"lab host {h.name} daemons")
    if ns_inode is not None:
        _terminate(_pids_in_namespace(ns_inode), what=f"processes in namespace {h.namespace}")
        remaining = _pids_in_namespace(ns_inode)
        if remaining:
            raise LabError(
                f"lab host {h.name}: processes {remaining} still run in {h.namespace}; end them, then stop again"
            )
    if _namespace_exists(h.namespace):
        done = _run(["ip", "netns", "delete", h.namespace], timeout=30)
        if done.returncode != 0 and _namespace_exists(h.namespace):
            raise LabError(f"lab host {h.name}: ip netns delete {h.namespace} failed: {_one_line(done.stderr)}")
    for directory in (h.state_dir, h.data_dir):
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            raise LabError(f"lab host {h.name}: could not remove {directory}; remove it by hand")
    for root in (host_state_root(), host_data_root()):
        try:
            root.rmdir()  # only when no other lab host uses it
        except OSError:
            pass


def clear(h: LabHost) -> None:
    """Empty a running lab host: every domain, network and volume goes; the daemons and the pools stay. For a caller
    whose `pulumi destroy` could not finish, so that the next stack finds the host as `start` left it."""
    _teardown_objects(h, keep_pools=True)


# --- start's steps ----------------------------------------------------------------------------------------------


def launch_script(h: LabHost) -> str:
    """The shell script that runs inside the namespace: bind-mount the lab's dirs over libvirt's, start the daemons.

    It runs under `unshare --mount --propagation private`, so the mounts exist only for the two daemons and their
    children (QEMU, dnsmasq) and vanish with them."""
    lines = ["#!/bin/sh", f"# Written by lab/host.py; runs in a private mount namespace in {h.namespace}.", "set -eu"]
    for source, target in h.bind_mounts():
        lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
    # The lab networks' dnsmasq forwards names it does not know to the servers in resolv.conf. The daemons see an
    # empty one: a guest's lookup of an outside name is refused at the gateway, and no query leaves the namespace.
    lines.append(f"mount --bind {shlex.quote(str(h.state_dir / 'resolv.conf'))} /etc/resolv.conf")
    lines += [
        "virtlogd --daemon --pid-file /run/libvirt/virtlogd.pid --config /etc/libvirt/virtlogd.conf",
        "libvirtd --daemon --pid-file /run/libvirt/libvirtd.pid --config /etc/libvirt/libvirtd.conf",
    ]
    return "\n".join(lines) + "\n"


def _prepare_dirs(h: LabHost) -> None:
    if len(os.fsencode(str(h.socket))) > MAX_SOCKET_PATH:
        raise LabError(
            f"lab host {h.name}: socket path {h.socket} is longer than {MAX_SOCKET_PATH} bytes; "
            "point KUBEADM_LIBVIRT_LAB_RUN at a shorter directory"
        )
    for source, _ in h.bind_mounts():
        source.mkdir(parents=True, exist_ok=True)
    h.state_dir.chmod(0o700)
    etc = h.state_dir / "etc"
    for sub in ("qemu/networks/autostart", "storage/autostart"):
        (etc / sub).mkdir(parents=True, exist_ok=True)
    (etc / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (etc / "virtlogd.conf").write_text(VIRTLOGD_CONF)
    (etc / "qemu.conf").write_text(QEMU_CONF)
    hook = etc / "hooks" / "qemu"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(qemu_hook())
    hook.chmod(0o755)
    (h.state_dir / "resolv.conf").write_text("# lab host: no upstream name servers (see launch_script)\n")
    h.launch_script.write_text(launch_script(h))
    h.pool_dir.mkdir(parents=True, exist_ok=True)
    # For people looking at the state dir; nothing reads it back.
    facts = {"name": h.name, "namespace": h.namespace, "uri": h.uri, "pool": str(h.pool_dir)}
    (h.state_dir / "host.json").write_text(json.dumps(facts, indent=2) + "\n")


def _create_namespace(h: LabHost) -> None:
    for argv in (["ip", "netns", "add", h.namespace], ["ip", "-n", h.namespace, "link", "set", "lo", "up"]):
        done = _run(argv, timeout=30)
        if done.returncode != 0:
            raise LabError(f"lab host {h.name}: {' '.join(argv)} failed: {_one_line(done.stderr)}")


def _launch_daemons(h: LabHost) -> None:
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    argv = ["ip", "netns", "exec", h.namespace, *unshare, "/bin/sh", str(h.launch_script)]
    # Both daemons fork into the background and the launcher returns. Their output goes to a file: a pipe would
    # stay open in the daemons.
    launch_log = h.log_dir / "launch.log"
    with open(launch_log, "wb") as log:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=DAEMON_READY_TIMEOUT,
                env=_tool_env(),
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"lab host {h.name}: starting the daemons hung (see {launch_log})") from None
    if done.returncode != 0:
        why = _one_line(launch_log.read_text())
        raise LabError(f"lab host {h.name}: starting the daemons failed: {why} (see {launch_log})")


def _wait_ready(h: LabHost) -> None:
    deadline = time.monotonic() + DAEMON_READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        daemons = _daemon_pid(h, h.libvirtd_pid_file, "libvirtd") and _daemon_pid(h, h.virtlogd_pid_file, "virtlogd")
        if daemons and h.socket.exists():
            done = _run(h.virsh_argv("version"), timeout=10)
            if done.returncode == 0:
                return
            last = _one_line(done.stderr)
        time.sleep(0.2)
    raise LabError(
        f"lab host {h.name}: libvirtd did not answer on {h.socket} within {DAEMON_READY_TIMEOUT:.0f} s "
        f"({last or 'no socket'}); see {h.log_dir}/libvirtd.log"
    )


def _define_pool(h: LabHost) -> None:
    """Define, start and autostart the `default` dir pool, each step only if not done yet."""
    if POOL_NAME not in _names(h, "pool-list", "--all", "--name"):
        h.pool_dir.mkdir(parents=True, exist_ok=True)
        h.virsh("pool-define-as", POOL_NAME, "dir", "--target", str(h.pool_dir))
        h.virsh("pool-autostart", POOL_NAME)
    if POOL_NAME not in _names(h, "pool-list", "--name"):
        h.pool_dir.mkdir(parents=True, exist_ok=True)
        h.virsh("pool-start", POOL_NAME)


# --- stop's steps -----------------------------------------------------------------------------------------------


def _teardown_objects(h: LabHost, keep_pools: bool = False) -> None:
    """Destroy and undefine every domain, network and pool (with its volumes) the lab host's libvirtd knows; with
    `keep_pools`, the pools stay, emptied.

    Best effort: whatever fails here still goes when the processes are ended and the directories removed."""
    for domain in _names(h, "list", "--all", "--name"):
        _run(h.virsh_argv("destroy", domain), timeout=VIRSH_TIMEOUT)
        undefine = h.virsh_argv("undefine", domain, "--managed-save", "--snapshots-metadata", "--nvram")
        if _run(undefine, timeout=VIRSH_TIMEOUT).returncode != 0:
            _run(h.virsh_argv("undefine", domain), timeout=VIRSH_TIMEOUT)
    for network in _names(h, "net-list", "--all", "--name"):
        _run(h.virsh_argv("net-destroy", network), timeout=VIRSH_TIMEOUT)
        _run(h.virsh_argv("net-undefine", network), timeout=VIRSH_TIMEOUT)
    active = set(_names(h, "pool-list", "--name"))
    for pool in _names(h, "pool-list", "--all", "--name"):
        if pool in active:
            for volume in _names(h, "vol-list", "--pool", pool, "--name"):
                _run(h.virsh_argv("vol-delete", "--pool", pool, volume), timeout=VIRSH_TIMEOUT)
        if keep_pools:
            continue
        if pool in active:
            _run(h.virsh_argv("pool-destroy", pool), timeout=VIRSH_TIMEOUT)
        _run(h.virsh_argv("pool-undefine", pool), timeout=VIRSH_TIMEOUT)


def _names(h: LabHost, *args: str) -> list[str]:
    done = _run(h.virsh_argv(*args), timeout=VIRSH_TIMEOUT)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _terminate(pids: Iterable[int], what: str, timeout: float = EXIT_TIMEOUT) -> None:
    """SIGTERM each pid, wait (bounded) for it to exit, then SIGKILL what is left and wait again."""
    pids = [p for p in pids if process_alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for p in pids if process_alive(p)]
            if not pids:
                return
            time.sleep(0.1)
    if pids:
        raise LabError(f"{what}: pids {pids} did not exit after SIGKILL")


# --- processes and namespaces -----------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Running (a zombie that nobody reaps counts as exited: in a container pid 1 may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _namespace_exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


def _namespace_inode(namespace: str) -> tuple[int, int] | None:
    try:
        st = os.stat(NETNS_DIR / namespace)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _process_namespace(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (st.st_dev, st.st_ino)


def _pids_in_namespace(ns_inode: tuple[int, int]) -> list[int]:
    own = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != own and _process_namespace(int(entry)) == ns_inode and process_alive(int(entry)):
            pids.append(int(entry))
    return sorted(pids)


def _daemon_pid(h: LabHost, pid_file: Path, program: str) -> int | None:
    """The pid in pid_file if that process runs and is this lab host's daemon (not a recycled pid)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not process_alive(pid):
        return None
    ns_inode = _namespace_inode(h.namespace)
    if ns_inode is not None:
        return pid if _process_namespace(pid) == ns_inode else None
    try:
        return pid if Path(f"/proc/{pid}/comm").read_text().strip() == program else None
    except FileNotFoundError:
        return None


# --- helpers ----------------------------------------------------------------------------------------------------


def _tool(command: str) -> str:
    """The command's absolute path when found (sbin may be missing from a caller's PATH), else its name."""
    return shutil.which(command, path=_SEARCH_PATH) or command


def _tool_env() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PATH"] = _SEARCH_PATH
    environ["LC_ALL"] = "C"
    return environ


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=_tool_env()
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", f"timed out after {timeout:.0f} s")
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


def _one_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"

