"""Pure renderers of a node's NoCloud seed: config in, text out. No Pulumi here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from components.config import NetworkSpec, NodeSpec
from components.templates import render

CLOUD_CONFIG_HEADER = "#cloud-config\n"


@dataclass(frozen=True)
class NodeSeed:
    """The three files of a node's cidata disk, exactly as they are written."""

    user_data: str
    meta_data: str
    network_config: str

    @property
    def digest(self) -> str:
        """Identifies this seed; names the node's disk, so a new seed means a new disk (cloud-init runs once)."""
        content = "\0".join((self.user_data, self.meta_data, self.network_config))
        return hashlib.sha256(content.encode()).hexdigest()

    def files(self) -> dict[str, str]:
        return {"user-data": self.user_data, "meta-data": self.meta_data, "network-config": self.network_config}


@dataclass(frozen=True)
class HostKey:
    """A node's SSH host key pair (OpenSSH formats). The private half is a secret."""

    private_key: str = field(repr=False)
    public_key: str


def render_user_data(node: NodeSpec, ssh_user: str, ssh_public_key: str, host_key: HostKey) -> str:
    return CLOUD_CONFIG_HEADER + render(
        "user-data.yaml",
        {
            "hostname": node.name,
            "ssh_user": ssh_user,
            "ssh_authorized_keys": [ssh_public_key.strip()],
            "host_private_key": host_key.private_key,
            "host_public_key": host_key.public_key.strip(),
        },
    )


def render_network_config(node: NodeSpec, network: NetworkSpec) -> str:
    return render(
        "network-config.yaml",
        {
            "mac": node.mac,
            "addresses": [f"{node.ip}/{network.cidr.prefixlen}"],
            "gateway": str(network.gateway),
            "nameservers": [str(server) for server in network.nameservers],
        },
    )


def render_meta_data(node: NodeSpec, user_data: str, network_config: str) -> str:
    content_hash = hashlib.sha256(f"{user_data}\0{network_config}".encode()).hexdigest()[:12]
    return render("meta-data.yaml", {"instance_id": f"{node.name}-{content_hash}", "hostname": node.name})


def render_seed(
    node: NodeSpec, network: NetworkSpec, ssh_user: str, ssh_public_key: str, host_key: HostKey
) -> NodeSeed:
    user_data = render_user_data(node, ssh_user, ssh_public_key, host_key)
    network_config = render_network_config(node, network)
    return NodeSeed(user_data, render_meta_data(node, user_data, network_config), network_config)
