"""Turn the merged stack config (raw values as the Pulumi CLI hands them over) into a validated ClusterConfig.

Every problem is collected and reported at once, each naming the key, the value and the fix, before any resource is
registered. Nothing here touches Pulumi: it is a function of a mapping (plus, for a local imageUrl, that file), so
every rule is unit-tested directly.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from components.addressing import derive_mac
from components.join_token import join_token_id
from components.config import (
    ACCELERATORS,
    CONTROL_PLANE,
    ROLES,
    RUNTIME_SOURCES,
    WORKER,
    ClusterConfig,
    ImageSpec,
    KubernetesSpec,
    NetworkSpec,
    NodeSpec,
    SshSpec,
    TimeoutScale,
)
from components import validation_sources, versions

NAMESPACE = "kubeadm-libvirt"

# kubeadm's preflight minimums (NumCPU, Mem) and a disk that holds images of the control plane and Calico.
# kubeadm checks NumCPU on `kubeadm init` only (JoinNodeChecks has no NumCPUCheck), so a worker may have one vCPU,
# as small labs size them. The top-level `vcpus` stays at 2 or more: it also sizes a control plane without its own.
MIN_VCPUS = 2
MIN_WORKER_VCPUS = 1
MIN_MEMORY_MIB = 2048
MIN_DISK_GIB = 20

NODE_KEYS = frozenset({"name", "role", "ip", "vcpus", "memoryMiB", "diskGiB", "mac"})
NETWORK_KEYS = frozenset({"name", "cidr", "gateway", "nameservers"})
# A Kubernetes node name and a Linux hostname at once: one lowercase RFC 1123 label.
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
POOL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
SSH_PUBLIC_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
PRIVATE_KEY_HEADER = re.compile(r"-----BEGIN (OPENSSH|RSA|EC|DSA)? ?PRIVATE KEY-----")
VERSION = re.compile(r"^1\.(\d+)(\.(\d+))?$")
# timeoutScale: at most two decimals, so it is an exact whole percentage (the node scripts compute in integers).
SCALE = re.compile(r"^\d+(\.\d{1,2})?$")
MAX_TIMEOUT_SCALE = 20  # 30-minute steps become 10 hours: beyond that a host is too slow to be worth waiting for
QCOW2_MAGIC = b"QFI\xfb"
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
# [host[:port]/]path[:tag][@sha256:digest], as Docker's reference grammar has it (no scheme: that is not a reference).
IMAGE_REF = re.compile(r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9._/-]+(?::\w[\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


class ConfigError(Exception):
    """The stack config is invalid; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"Invalid {NAMESPACE} configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}); "
            f"nothing was created:\n{lines}"
        )


@dataclass
class Problems:
    """Collects problems as `key: value is wrong; fix: ...` lines, in the order they were found."""

    items: list[str] = field(default_factory=list)

    def add(self, key: str, value: Any, what: str, fix: str) -> None:
        self.items.append(f"{key}: {_show(value)} {what}; fix: {fix}")

    def __bool__(self) -> bool:
        return bool(self.items)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else str(value)


@dataclass(frozen=True)
class RawConfig:
    """Config as the CLI passes it: every value a string (structured ones JSON), plus which keys were secret."""

    values: Mapping[str, str]
    secret_keys: frozenset[str] = frozenset()

    def get(self, key: str) -> str | None:
        return self.values.get(key)


def parse_cluster_config(raw: RawConfig) -> ClusterConfig:
    """Validate `raw` and build the ClusterConfig, or raise ConfigError listing every problem."""
    problems = Problems()
    scalars = _Scalars(raw, problems)

    default_vcpus = scalars.integer("vcpus", minimum=MIN_VCPUS, why="kubeadm's preflight needs 2 CPUs")
    default_memory = scalars.integer("memoryMiB", minimum=MIN_MEMORY_MIB, why="kubeadm's preflight needs 2 GiB")
    default_disk = scalars.integer("diskGiB", minimum=MIN_DISK_GIB, why="images and etcd need the room")
    network = _parse_network(scalars.structured("network", dict), problems)
    nodes = _parse_nodes(
        scalars.structured("nodes", list), network, problems, (default_vcpus, default_memory, default_disk)
    )
    ssh = _parse_ssh(raw, scalars, problems)
    image = _parse_image(scalars.string("imageUrl"), problems)
    storage_pool = scalars.string("storagePool", pattern=POOL_NAME, fix="the name of a libvirt storage pool")
    kubernetes = _parse_kubernetes(scalars, problems, network, nodes, image.configured if image else "")
    os_apt = validation_sources.parse_os_apt(
        scalars.structured("osAptSources", list), scalars.string("osAptKeyUrl", required=False), problems
    )
    protect = scalars.boolean("protectControlPlane", required=False)
    accelerator = scalars.choice("accelerator", ACCELERATORS)
    timeouts = scalars.timeout_scale("timeoutScale")

    if problems:
        raise ConfigError(problems.items)
    return ClusterConfig(
        nodes=tuple(nodes),
        network=network,  # type: ignore[arg-type]  # not None when there are no problems
        ssh=ssh,
        image=image,  # type: ignore[arg-type]
        storage_pool=storage_pool,
        kubernetes=kubernetes,  # type: ignore[arg-type]
        os_apt=os_apt,
        protect_control_plane=bool(protect),
        accelerator=accelerator,  # type: ignore[arg-type]
        timeouts=timeouts,
    )


def _parse_image(value: str, problems: Problems) -> ImageSpec | None:
    """An http(s) URL, a file:///abs/path URL or an absolute path. A local file is read by the libvirt provider on
    the machine running Pulumi, so it must exist there already at preview time, and be qcow2 (the base volume's
    format). The provider gets a file:// URL for it, percent-encoded: it parses `source` as a URL, so a bare path
    with '%', '?' or '#' in it would be misread."""
    if not value:
        return None
    fix = "an http(s) URL, a file:///absolute/path.qcow2 URL or an absolute path to a qcow2 image"
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc or re.search(r"\s", value):
            problems.add("imageUrl", value, "is not a valid http(s) URL", f"use {fix}")
            return None
        name = posixpath.basename(parsed.path) or "base.img"
        return ImageSpec(configured=value, source=value, file_name=name)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            problems.add("imageUrl", value, f"names the host {parsed.netloc!r} (a file URL is read on this machine)", "write file:///absolute/path.qcow2 (three slashes)")
            return None
        path_text = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        problems.add("imageUrl", value, f"has the unsupported scheme {parsed.scheme!r}", f"use {fix}")
        return None
    else:
        path_text = value
    path = Path(path_text)
    if not path.is_absolute():
        problems.add("imageUrl", value, "is a relative path (Pulumi may run the program from another directory)", f"use an absolute path, e.g. {Path.cwd() / path_text}")
        return None
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "does not exist on this machine"
        problems.add("imageUrl", value, what, "download the qcow2 image first (e.g. curl -fLo /var/tmp/image.qcow2 URL), or use an http(s) URL")
        return None
    try:
        with path.open("rb") as image:
            magic = image.read(4)
    except OSError as error:
        problems.add("imageUrl", value, f"cannot be read ({error.strerror})", "make the file readable by the user running Pulumi")
        return None
    if magic != QCOW2_MAGIC:
        problems.add("imageUrl", value, "is not a qcow2 image", "convert it with `qemu-img convert -O qcow2 IN OUT`, or use a cloud image in qcow2 format")
        return None
    return ImageSpec(configured=value, source="file://" + quote(str(path)), file_name=path.name)


class _Scalars:
    """Reads top-level keys. The CLI stores `pulumi config set vcpus 4` as the string "4": parse it strictly."""

    def __init__(self, raw: RawConfig, problems: Problems) -> None:
        self.raw = raw
        self.problems = problems

    def _value(self, key: str, required: bool = True) -> str | None:
        value = self.raw.get(key)
        if value is None and required:
            self.problems.add(
                key,
                None,
                "is not set",
                f"Pulumi.yaml declares its default; run with a Pulumi CLI >= 3.44 or `pulumi config set {key} ...`",
            )
        return value

    def integer(self, key: str, minimum: int, why: str) -> int:
        value = self._value(key)
        if value is None:
            return minimum
        if not re.fullmatch(r"\d+", value.strip()):
            self.problems.add(key, value, "is not a whole number", f"`pulumi config set {key} {minimum}`")
            return minimum
        number = int(value)
        if number < minimum:
            self.problems.add(key, number, f"is below {minimum} ({why})", f"set it to {minimum} or more")
        return number

    def boolean(self, key: str, required: bool = True) -> bool:
        value = self._value(key, required)
        if value is None:
            return False
        if value not in ("true", "false"):
            self.problems.add(key, value, "is not a boolean", f"`pulumi config set {key} true` or `false`")
            return False
        return value == "true"

    def string(self, key: str, pattern: re.Pattern[str] | None = None, fix: str = "", required: bool = True) -> str:
        value = self._value(key, required)
        if value is None:
            return ""
        if pattern is not None and not pattern.match(value):
            self.problems.add(key, value, "is not valid", f"use {fix}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self._value(key)
        if value is None:
            return choices[0]
        if value not in choices:
            self.problems.add(key, value, "is not a known value", f"use one of {', '.join(choices)}")
        return value

    def timeout_scale(self, key: str) -> TimeoutScale:
        """A number from 1 to MAX_TIMEOUT_SCALE (Pulumi.yaml has no number type: it arrives as a string)."""
        value = self._value(key)
        if value is None:
            return TimeoutScale(100)
        fix = f"use a number from 1 to {MAX_TIMEOUT_SCALE} with at most two decimals, e.g. `pulumi config set {key} 4` on a TCG host"
        if not SCALE.match(value.strip()):
            self.problems.add(key, value, "is not a number", fix)
            return TimeoutScale(100)
        whole, _, fraction = value.strip().partition(".")
        percent = int(whole) * 100 + int(fraction.ljust(2, "0"))
        if percent < 100:
            self.problems.add(key, value, "is below 1 (it would cut every bound short)", fix)
        elif percent > MAX_TIMEOUT_SCALE * 100:
            self.problems.add(key, value, f"is above {MAX_TIMEOUT_SCALE} (a step would wait for hours)", fix)
        else:
            return TimeoutScale(percent)
        return TimeoutScale(100)

    def structured(self, key: str, kind: type) -> Any:
        value = self._value(key)
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not isinstance(parsed, kind):
            expected = "a list" if kind is list else "a mapping"
            self.problems.add(
                key, parsed, f"is not {expected}", f"see Pulumi.yaml for the shape; `pulumi config set --path '{key}...'`"
            )
            return None
        return parsed


def _typed(problems: Problems, key: str, value: Any, kind: type, fix: str) -> bool:
    """True when value has exactly `kind`. YAML and JSON keep types: "4" is not 4 and True is not 1."""
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        what = "is a string, not a number" if isinstance(value, str) else "is not a whole number"
        problems.add(key, value, what, fix)
        return False
    if kind is str and not isinstance(value, str):
        problems.add(key, value, "is not a string", fix)
        return False
    if kind is bool and not isinstance(value, bool):
        what = "is a string, not a boolean" if isinstance(value, str) else "is not a boolean"
        problems.add(key, value, what, fix)
        return False
    return True


def _ipv4(problems: Problems, key: str, value: Any) -> ipaddress.IPv4Address | None:
    if not _typed(problems, key, value, str, "write the address as a string, e.g. 192.168.141.130"):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        problems.add(key, value, "is not an IPv4 address", "use a dotted quad such as 192.168.141.130")
        return None


def _ipv4_network(problems: Problems, key: str, value: Any, example: str) -> ipaddress.IPv4Network | None:
    if not _typed(problems, key, value, str, f"write the subnet as a string, e.g. {example}"):
        return None
    try:
        return ipaddress.IPv4Network(value)
    except ValueError as error:
        problems.add(key, value, f"is not an IPv4 subnet ({error})", f"use CIDR notation with host bits zero, e.g. {example}")
        return None


def _parse_network(raw: Any, problems: Problems) -> NetworkSpec | None:
    if raw is None:
        return None
    for unknown in sorted(set(raw) - NETWORK_KEYS):
        problems.add(f"network.{unknown}", raw[unknown], "is not a known key", f"remove it; known keys: {', '.join(sorted(NETWORK_KEYS))}")
    name = raw.get("name", "kubeadm-libvirt")
    if _typed(problems, "network.name", name, str, "a string") and not HOSTNAME.match(name):
        problems.add("network.name", name, "is not a valid libvirt network name", "use lowercase letters, digits and '-'")
    cidr = _ipv4_network(problems, "network.cidr", raw.get("cidr"), "192.168.141.0/24")
    if cidr is None:
        return None
    if cidr.num_addresses < 8:
        problems.add("network.cidr", str(cidr), "is too small for a gateway and nodes", "use a /29 or larger, e.g. a /24")
        return None
    if "gateway" in raw:
        gateway = _ipv4(problems, "network.gateway", raw["gateway"])
        if gateway is not None and (gateway not in cidr or gateway in (cidr.network_address, cidr.broadcast_address)):
            problems.add("network.gateway", str(gateway), f"is not a host address of {cidr}", f"use e.g. {next(cidr.hosts())}")
    else:
        gateway = next(cidr.hosts())  # where libvirt puts the NAT bridge
    nameservers_raw = raw.get("nameservers", [str(gateway)] if gateway else [])
    nameservers: list[ipaddress.IPv4Address] = []
    if not isinstance(nameservers_raw, list) or not nameservers_raw:
        problems.add("network.nameservers", nameservers_raw, "is not a non-empty list", "list at least one DNS server, e.g. the gateway")
    else:
        for index, server in enumerate(nameservers_raw):
            address = _ipv4(problems, f"network.nameservers[{index}]", server)
            if address is not None:
                nameservers.append(address)
    if gateway is None:
        return None
    return NetworkSpec(name=name if isinstance(name, str) else "", cidr=cidr, gateway=gateway, nameservers=tuple(nameservers))


def _parse_nodes(
    raw: Any, network: NetworkSpec | None, problems: Problems, defaults: tuple[int, int, int]
) -> list[NodeSpec]:
    if raw is None:
        return []
    nodes: list[NodeSpec] = []
    for index, entry in enumerate(raw):
        key = f"nodes[{index}]"
        if not isinstance(entry, dict):
            problems.add(key, entry, "is not a mapping", "write {name: ..., role: ..., ip: ...}")
            continue
        node = _parse_node(key, entry, network, problems, defaults)
        if node is not None:
            nodes.append(node)
    _check_node_set(raw, nodes, problems)
    return nodes


def _parse_node(
    key: str, entry: dict, network: NetworkSpec | None, problems: Problems, defaults: tuple[int, int, int]
) -> NodeSpec | None:
    ok = True
    for unknown in sorted(set(entry) - NODE_KEYS):
        problems.add(f"{key}.{unknown}", entry[unknown], "is not a known node key", f"remove it; known keys: {', '.join(sorted(NODE_KEYS))}")
        ok = False
    for required in ("name", "role", "ip"):
        if required not in entry:
            problems.add(f"{key}.{required}", None, "is missing", f"every node needs {required}")
            ok = False
    name = entry.get("name")
    if name is not None and _typed(problems, f"{key}.name", name, str, "a string") and not HOSTNAME.match(name):
        problems.add(f"{key}.name", name, "is not a valid hostname", "use lowercase letters, digits and '-', at most 63, no leading/trailing '-'")
        ok = False
    role = entry.get("role")
    if role is not None and role not in ROLES:
        problems.add(f"{key}.role", role, "is not a known role", f"use one of {', '.join(ROLES)}")
        ok = False
    ip = _ipv4(problems, f"{key}.ip", entry["ip"]) if "ip" in entry else None
    if ip is not None and network is not None:
        cidr = network.cidr
        if ip not in cidr:
            problems.add(f"{key}.ip", str(ip), f"is outside network.cidr {cidr}", f"pick a free host address of {cidr}")
        elif ip in (cidr.network_address, cidr.broadcast_address):
            problems.add(f"{key}.ip", str(ip), f"is the network or broadcast address of {cidr}", "pick a host address")
        elif ip == network.gateway:
            problems.add(f"{key}.ip", str(ip), "is the gateway (the libvirt bridge)", "pick another host address")
    sizes = []
    vcpus_floor = (MIN_WORKER_VCPUS, "a worker needs 1") if role == WORKER else (MIN_VCPUS, "kubeadm's preflight needs 2 CPUs")
    for field_name, default, minimum, why in (
        ("vcpus", defaults[0], *vcpus_floor),
        ("memoryMiB", defaults[1], MIN_MEMORY_MIB, "kubeadm's preflight needs 2 GiB"),
        ("diskGiB", defaults[2], MIN_DISK_GIB, "images and etcd need the room"),
    ):
        if field_name not in entry:
            sizes.append(default)  # the top-level key, checked once there
            continue
        value = entry[field_name]
        if not _typed(problems, f"{key}.{field_name}", value, int, f"write a number without quotes, e.g. {field_name}: {minimum}"):
            ok = False
        elif value < minimum:
            problems.add(f"{key}.{field_name}", value, f"is below {minimum} ({why})", f"set it to {minimum} or more")
            ok = False
        sizes.append(value)
    mac = entry.get("mac")
    if mac is not None:
        if not _typed(problems, f"{key}.mac", mac, str, "a string like 52:54:00:12:34:56"):
            ok = False
        elif not MAC.match(mac.lower()) or int(mac[:2], 16) & 1:
            problems.add(f"{key}.mac", mac, "is not a unicast MAC address", "use six hex pairs such as 52:54:00:12:34:56, or leave it out")
            ok = False
    if not ok or ip is None or not isinstance(name, str):
        return None
    return NodeSpec(
        name=name,
        role=role,
        ip=ip,
        mac=mac.lower() if isinstance(mac, str) else derive_mac(name, ip),
        vcpus=sizes[0],
        memory_mib=sizes[1],
        disk_gib=sizes[2],
    )


def _check_node_set(raw: list, nodes: list[NodeSpec], problems: Problems) -> None:
    for attribute, label in (("name", "name"), ("ip", "IP"), ("mac", "MAC")):
        counts = Counter(str(getattr(node, attribute)) for node in nodes)
        for value, count in sorted(counts.items()):
            if count > 1:
                problems.add("nodes", value, f"is the {label} of {count} nodes", f"give every node its own {label}")
    # Each worker's bootstrap token id is derived from its name: two workers sharing one would replace each
    # other's token (a chance of about 1 in 4e9 per pair of names).
    by_token_id: dict[str, list[str]] = {}
    for node in nodes:
        if not node.is_control_plane:
            by_token_id.setdefault(join_token_id(node.name), []).append(node.name)
    for token_id, names in sorted(by_token_id.items()):
        if len(names) > 1:
            problems.add(
                "nodes", " and ".join(names), f"derive the same join token id {token_id!r}", "rename one of these workers"
            )
    roles = [entry.get("role") for entry in raw if isinstance(entry, dict)]
    control_planes = roles.count(CONTROL_PLANE)
    if control_planes != 1:
        problems.add(
            "nodes",
            f"{control_planes} control planes",
            "is not supported (a single control plane; HA is not implemented)",
            "give exactly one node role: control-plane",
        )


def _parse_ssh(raw: RawConfig, scalars: _Scalars, problems: Problems) -> SshSpec:
    user = scalars.string("sshUser")
    if user and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        problems.add("sshUser", user, "is not a valid Linux user name", "use lowercase letters, digits, '_' and '-'")
    if user == "root":
        problems.add("sshUser", user, "cannot be root (cloud-init disables root login)", "use e.g. ubuntu")
    public_key = (raw.get("sshPublicKey") or "").strip()
    private_key = (raw.get("sshPrivateKey") or "").strip()
    if bool(public_key) != bool(private_key):
        given, missing = ("sshPublicKey", "sshPrivateKey") if public_key else ("sshPrivateKey", "sshPublicKey")
        problems.add(
            missing,
            "",
            f"is empty while {given} is set (both halves are needed: one is installed, the other logs in)",
            f"set {missing} too, or unset {given} to have the stack generate a key pair",
        )
    if public_key:
        reason = _openssh_public_key_problem(public_key)
        if reason:
            problems.add("sshPublicKey", public_key[:40] + ("..." if len(public_key) > 40 else ""), reason, "paste one line of ~/.ssh/id_ed25519.pub")
    if private_key:
        # Never echo the value: it is a secret even when it was (wrongly) stored in plain text.
        if not PRIVATE_KEY_HEADER.search(private_key):
            problems.add("sshPrivateKey", "[secret]", "is not a PEM/OpenSSH private key", "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`")
        if f"{NAMESPACE}:sshPrivateKey" not in raw.secret_keys:
            problems.add(
                "sshPrivateKey",
                "[secret]",
                "is stored in plain text in the stack file",
                "`pulumi config rm sshPrivateKey` then `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`",
            )
    return SshSpec(user=user, public_key=public_key or None, private_key=private_key or None)


def _openssh_public_key_problem(key: str) -> str | None:
    """Why `key` is not an OpenSSH public key line, or None. The blob must decode and name its own type."""
    parts = key.split()
    if len(parts) < 2:
        return "is not an OpenSSH public key (expected 'TYPE BASE64 [comment]')"
    key_type, blob = parts[0], parts[1]
    if key_type not in SSH_PUBLIC_KEY_TYPES:
        return f"has an unknown key type {key_type!r}"
    try:
        decoded = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "has a key body that is not base64"
    if len(decoded) < 4:
        return "has a truncated key body"
    length = int.from_bytes(decoded[:4], "big")
    if decoded[4 : 4 + length] != key_type.encode():
        return "has a key body that does not match its type"
    return None


def _parse_kubernetes(
    scalars: _Scalars,
    problems: Problems,
    network: NetworkSpec | None,
    nodes: list[NodeSpec],
    image_url: str,
) -> KubernetesSpec | None:
    version = scalars.string("kubernetesVersion")
    match = VERSION.match(version) if version else None
    if version and not match:
        problems.add("kubernetesVersion", version, "is not a Kubernetes version", "use 1.MINOR or 1.MINOR.PATCH, e.g. 1.34 or 1.34.3")
    pod_subnet = _ipv4_network(problems, "podSubnet", scalars.string("podSubnet"), "10.244.0.0/16")
    service_subnet = _ipv4_network(problems, "serviceSubnet", scalars.string("serviceSubnet"), "10.96.0.0/12")
    kube_proxy_mode = scalars.choice("kubeProxyMode", ("ipvs", "iptables"))
    calico_version = scalars.string("calicoVersion")
    allow_untested_calico = scalars.boolean("allowUntestedCalico")
    untested_calico = ""
    smoke_image = scalars.string("smokeImage", IMAGE_REF, "an image reference such as docker.io/library/nginx:1.27-alpine")
    mirror = scalars.choice("mirror", tuple(versions.MIRRORS))
    allow_cgroup_v1 = scalars.boolean("allowCgroupV1")
    docker_version = scalars.string("dockerVersion")
    containerd_version = scalars.string("containerdVersion")
    for key, value in (("dockerVersion", docker_version), ("containerdVersion", containerd_version)):
        if value and not SEMVER.match(value):
            problems.add(key, value, "is not a version", "use MAJOR.MINOR.PATCH as in the upstream package, e.g. 24.0.2")
    registry_mirrors = scalars.structured("registryMirrors", list) or []
    for index, url in enumerate(registry_mirrors):
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            problems.add(f"registryMirrors[{index}]", url, "is not an http(s) URL", "list mirror URLs such as https://mirror.example.com")
    registries = validation_sources.parse_registries(scalars.structured("registries", list), registry_mirrors, problems)
    calico_registry = validation_sources.parse_calico_registry(scalars.string("calicoRegistry", required=False), problems)
    runtime_source = scalars.choice("containerRuntimeSource", RUNTIME_SOURCES)

    minor = int(match.group(1)) if match else None
    if minor is not None:
        if not versions.SUPPORTED_KUBERNETES_MINORS[0] <= minor <= versions.SUPPORTED_KUBERNETES_MINORS[1]:
            low, high = versions.SUPPORTED_KUBERNETES_MINORS
            problems.add("kubernetesVersion", version, f"is outside the supported 1.{low}-1.{high}", f"use 1.{versions.DEFAULT_MINOR}")
        else:
            _check_preflight(problems, version, minor, versions.image_facts(image_url), allow_cgroup_v1)
            if not versions.image_uses_cgroup_v1(image_url):  # (there _check_preflight refuses what needs containerd 2)
                validation_sources.check_runtime_source(runtime_source, minor, image_url, problems)
        calico_problem = versions.calico_problem(calico_version, minor)
        if calico_problem and allow_untested_calico and versions.calico_is_known(calico_version):
            untested_calico = f"calicoVersion {calico_version} {calico_problem} (accepted: allowUntestedCalico is true)"
        elif calico_problem:
            fix = versions.calico_fix(minor)
            if versions.calico_is_known(calico_version):
                fix += ", or set allowUntestedCalico true to run it untested"
            problems.add("calicoVersion", calico_version, calico_problem, fix)

    _check_subnets(problems, network, pod_subnet, service_subnet, len(nodes))
    profile = versions.MIRRORS.get(mirror, versions.MIRRORS["global"])
    overrides = {
        key: scalars.string(key, required=False) or profile[key].format(calico_version=calico_version)
        for key in ("dockerAptMirror", "kubernetesAptMirror", "imageRepository", "calicoManifestUrl")
    }
    for key in ("dockerAptMirror", "kubernetesAptMirror", "calicoManifestUrl"):
        if not re.match(r"^https?://\S+$", overrides[key]):
            problems.add(key, overrides[key], "is not an http(s) URL", "give the base URL of the mirror, or leave it empty")
    # Each node picks its distribution's repository below this directory (ubuntu/ or debian/, from /etc/os-release).
    if re.search(r"/(ubuntu|debian)/?$", overrides["dockerAptMirror"]):
        problems.add(
            "dockerAptMirror",
            overrides["dockerAptMirror"],
            "names one distribution's repository (each node adds ubuntu/ or debian/ itself)",
            f"drop the last path segment, e.g. {overrides['dockerAptMirror'].rstrip('/').rsplit('/', 1)[0]}",
        )
    if not re.match(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$", overrides["imageRepository"]):
        problems.add("imageRepository", overrides["imageRepository"], "is not an image repository", "e.g. registry.k8s.io")
    if problems or match is None or pod_subnet is None or service_subnet is None:
        return None
    return KubernetesSpec(
        version=version,
        pod_subnet=pod_subnet,
        service_subnet=service_subnet,
        kube_proxy_mode=kube_proxy_mode,  # type: ignore[arg-type]
        calico_version=calico_version,
        mirror=mirror,  # type: ignore[arg-type]
        docker_apt_mirror=overrides["dockerAptMirror"].rstrip("/"),
        kubernetes_apt_mirror=overrides["kubernetesAptMirror"].rstrip("/"),
        image_repository=overrides["imageRepository"],
        registry_mirrors=tuple(registry_mirrors),
        calico_manifest_url=overrides["calicoManifestUrl"].rstrip("/"),
        calico_registry=calico_registry,
        registries=registries,
        container_runtime_source=runtime_source,  # type: ignore[arg-type]
        docker_version=docker_version,
        containerd_version=containerd_version,
        smoke_test=scalars.boolean("smokeTest"),
        calico_api_server=scalars.boolean("calicoApiServer"),
        smoke_image=smoke_image,
        allow_cgroup_v1=allow_cgroup_v1,
        untested_calico=untested_calico,
    )


def _check_preflight(
    problems: Problems, version: str, minor: int, facts: versions.ImageFacts | None, allow_cgroup_v1: bool
) -> None:
    """Accept a version on an image only where kubeadm's SystemVerification preflight passes, for `kubeadm init`
    and `kubeadm join` alike (both run it, on each node's own kernel and kubelet): its errors stop both unless
    SystemVerification is ignored, which this project does only under allowCgroupV1 (versions.cgroup_v1_opt_in).
    An image not recognised by name is not checked (versions.KNOWN_IMAGES)."""
    if facts is None:
        return
    on = f"on {facts.name} (kernel {facts.kernel_short}, cgroup {'v1' if facts.cgroup_v1 else 'v2'})"
    if facts.cgroup_v1 and minor > versions.CGROUP_V1_LAST_MINOR_WITH_CONTAINERD_1:
        problems.add(
            "kubernetesVersion",
            version,
            f"cannot run on this image: {on}; Kubernetes 1.36+ needs containerd 2, not 1.x, and the project runs none on cgroup v1 images (Docker's Ubuntu 18.04 repository never had it)",
            f"use {_passing_minors(facts)}, or an Ubuntu 22.04/24.04 or Debian 12 imageUrl",
        )
        return
    errors = versions.system_verification_errors(minor, facts)
    if not errors or versions.cgroup_v1_opt_in(allow_cgroup_v1, minor):
        return
    only_cgroup_v1 = all(error.startswith("cgroups v1") for error in errors)
    fix = f"use {_passing_minors(facts)}"
    if only_cgroup_v1:
        fix += " (1.35+ refuses cgroup v1 by default), or opt in with `pulumi config set allowCgroupV1 true`"
    else:
        fix += f", or an image with a kernel kubeadm 1.{minor} accepts (Ubuntu 20.04+, Debian 12)"
    problems.add(
        "kubernetesVersion",
        version,
        f"fails kubeadm's SystemVerification preflight (init and join) {on}: {'; '.join(errors)}",
        fix,
    )


def _passing_minors(facts: versions.ImageFacts) -> str:
    """The newest minors whose preflight passes on this image without any opt-in and that a supported Calico
    release runs on (no advice that the next validation would refuse), e.g. "1.33 or 1.34"."""
    passing = [f"1.{minor}" for minor in sorted(versions.SYSTEM_VERIFICATION)
               if not versions.system_verification_errors(minor, facts) and versions.calico_releases_for(minor)]  # fmt: skip
    return " or ".join(passing[-2:]) if passing else "no Kubernetes version this project supports"


def _check_subnets(
    problems: Problems,
    network: NetworkSpec | None,
    pod_subnet: ipaddress.IPv4Network | None,
    service_subnet: ipaddress.IPv4Network | None,
    node_count: int,
) -> None:
    named = [("network.cidr", network.cidr if network else None), ("podSubnet", pod_subnet), ("serviceSubnet", service_subnet)]
    for position, (key_a, subnet_a) in enumerate(named):
        for key_b, subnet_b in named[position + 1 :]:
            if subnet_a is not None and subnet_b is not None and subnet_a.overlaps(subnet_b):
                problems.add(
                    key_b,
                    str(subnet_b),
                    f"overlaps {key_a} {subnet_a} (pods or services would shadow real addresses)",
                    "pick disjoint ranges, e.g. podSubnet 10.244.0.0/16 and serviceSubnet 10.96.0.0/12",
                )
    if service_subnet is not None:
        if service_subnet.prefixlen < 12:
            problems.add("serviceSubnet", str(service_subnet), "is larger than the API server accepts (/12)", "use a /12 to /24")
        elif service_subnet.prefixlen > 24:
            problems.add("serviceSubnet", str(service_subnet), "is too small for a cluster's services", "use a /24 or larger, e.g. 10.96.0.0/12")
    if pod_subnet is not None:
        # kube-controller-manager hands every node a /24 of the pod subnet.
        blocks = 2 ** (24 - pod_subnet.prefixlen) if pod_subnet.prefixlen <= 24 else 0
        if blocks < max(node_count, 1):
            problems.add("podSubnet", str(pod_subnet), f"holds {blocks} node /24 blocks for {node_count} nodes", "use a /16, e.g. 10.244.0.0/16")
