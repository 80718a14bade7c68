"""The typed configuration of a cluster: built once from the stack config, validated, then passed down read-only.

Defaults do not live here: Pulumi.yaml declares every key with its default and the Pulumi CLI merges them with the
stack file before the program runs. What lives here is the shape, and the few values that are *derived* from other
values (a node's MAC, the network's gateway).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["control-plane", "worker"]
Accelerator = Literal["kvm", "tcg"]
ACCELERATORS: tuple[Accelerator, ...] = ("kvm", "tcg")
CONTROL_PLANE: Role = "control-plane"
WORKER: Role = "worker"
ROLES: tuple[Role, ...] = (CONTROL_PLANE, WORKER)
RuntimeSource = Literal["docker-repo", "os-archive"]
# docker-repo: Docker's apt repository, docker-ce and containerd.io pinned (the tutorial); os-archive: the
# distribution's own docker.io and containerd from the node's configured apt sources (reachable from a local mirror).
RUNTIME_SOURCES: tuple[RuntimeSource, ...] = ("docker-repo", "os-archive")


@dataclass(frozen=True)
class NodeSpec:
    """One VM and the Kubernetes node it becomes."""

    name: str
    role: Role
    ip: ipaddress.IPv4Address
    mac: str
    vcpus: int
    memory_mib: int
    disk_gib: int

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


@dataclass(frozen=True)
class NetworkSpec:
    """The libvirt NAT network the nodes share; DHCP is off, every node has a static address."""

    name: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    nameservers: tuple[ipaddress.IPv4Address, ...]


@dataclass(frozen=True)
class SshSpec:
    """How the nodes are logged into. Both key halves are None when the stack is to generate the pair."""

    user: str
    public_key: str | None
    # The private key is a secret: never in repr, and wrapped in Output.secret wherever it is used.
    private_key: str | None = field(default=None, repr=False)

    @property
    def generates_key_pair(self) -> bool:
        return self.public_key is None


@dataclass(frozen=True)
class RegistrySpec:
    """A registry that containerd and Docker on every node reach over plain HTTP or trust through a private CA."""

    host: str  # host[:port] as image references name it, e.g. 192.168.150.1:5000
    plain_http: bool
    ca_cert: str | None  # PEM (public: a CA certificate is no secret)


@dataclass(frozen=True)
class OsAptSpec:
    """The distribution archive the nodes use instead of the image's own apt sources (empty: keep the image's)."""

    sources: tuple[str, ...]  # one-line entries: deb [options] URL SUITE [COMPONENT...]
    key_url: str  # "" or the URL of the key the entries reference with signed-by=OS_APT_KEYRING


# Where osAptKeyUrl's key is installed; an entry uses it with [signed-by=...].
OS_APT_KEYRING = "/etc/apt/keyrings/kubeadm-libvirt-os.gpg"


@dataclass(frozen=True)
class KubernetesSpec:
    """What runs on the nodes: versions, subnets, package and image sources."""

    version: str  # "1.34" (newest patch of that minor) or "1.34.3"
    pod_subnet: ipaddress.IPv4Network
    service_subnet: ipaddress.IPv4Network
    kube_proxy_mode: Literal["ipvs", "iptables"]
    calico_version: str
    mirror: Literal["global", "china"]
    docker_apt_mirror: str
    kubernetes_apt_mirror: str
    image_repository: str
    registry_mirrors: tuple[str, ...]
    calico_manifest_url: str
    calico_registry: str  # Installation.spec.registry: "quay.io/" or "host[:port][/path]/"
    registries: tuple[RegistrySpec, ...]
    container_runtime_source: RuntimeSource
    docker_version: str
    containerd_version: str
    smoke_test: bool
    smoke_image: str
    allow_cgroup_v1: bool
    calico_api_server: bool  # the operator's APIServer: projectcalico.org/v3 served to kubectl
    # The Calico/Kubernetes pairing is outside Calico's tested range, accepted under allowUntestedCalico: the text
    # of the warning the program logs, else "".
    untested_calico: str = ""

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def minor_number(self) -> int:
        return int(self.version.split(".")[1])


@dataclass(frozen=True)
class TimeoutScale:
    """`timeoutScale` as a whole percentage (1.5 -> 150), so Python and the node scripts scale alike.

    Every bound the program sets or passes on (Pulumi custom timeouts, SSH dial retries, the node scripts' waits,
    kubeadm's own timeouts) goes through `seconds`, rounding up: a scaled bound is never shorter than intended.
    """

    percent: int  # 100 is timeoutScale 1

    @property
    def stretched(self) -> bool:
        """Above timeoutScale 1: a slow host, whose components' own deadlines the stack stretches too."""
        return self.percent > 100

    def seconds(self, base_seconds: int) -> int:
        return -(-base_seconds * self.percent // 100)

    def duration(self, base_seconds: int) -> str:
        """The scaled bound as a Go duration ("30m", "22m30s"): what Pulumi's engine and kubeadm parse."""
        minutes, seconds = divmod(self.seconds(base_seconds), 60)
        if not minutes:
            return f"{seconds}s"
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"


@dataclass(frozen=True)
class ImageSpec:
    """The base image: `source` is what the libvirt provider reads (an http(s) URL, or a file:// URL of a local
    file on the machine running Pulumi); `file_name` names the base volume."""

    configured: str  # imageUrl as written, for messages and OS/cgroup heuristics
    source: str
    file_name: str


@dataclass(frozen=True)
class ClusterConfig:
    """Everything the program builds from: validated, immutable, created once in __main__.py."""

    nodes: tuple[NodeSpec, ...]
    network: NetworkSpec
    ssh: SshSpec
    image: ImageSpec
    storage_pool: str
    kubernetes: KubernetesSpec
    os_apt: OsAptSpec
    # kvm: hardware virtualization; tcg: QEMU's software emulation (no usable /dev/kvm, e.g. nested without VT-x).
    accelerator: Accelerator
    timeouts: TimeoutScale
    protect_control_plane: bool = False

    @property
    def control_plane(self) -> NodeSpec:
        return next(node for node in self.nodes if node.is_control_plane)

    @property
    def workers(self) -> tuple[NodeSpec, ...]:
        return tuple(node for node in self.nodes if not node.is_control_plane)

    @property
    def control_plane_schedulable(self) -> bool:
        # With no workers the control-plane taint is removed so workloads (and the smoke test) can run.
        return not self.workers
