"""The VMs of a cluster: the libvirt network, the shared base image, the SSH key pair and one Node per entry."""

from __future__ import annotations

import pulumi
import pulumi_libvirt as libvirt
import pulumi_tls as tls

from components.config import ClusterConfig
from components.node import Node, NodeArgs


class Infrastructure(pulumi.ComponentResource):
    """Everything libvirt holds for the cluster. Nodes come out in config order, the control plane among them."""

    nodes: dict[str, Node]
    ssh_public_key: pulumi.Output[str]
    ssh_private_key: pulumi.Output[str]

    def __init__(self, name: str, config: ClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("kubeadm-libvirt:index:Infrastructure", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = config.network

        if config.ssh.generates_key_pair:
            key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=child)
            self.ssh_public_key = key.public_key_openssh.apply(str.strip)
            self.ssh_private_key = pulumi.Output.secret(key.private_key_openssh)
        else:
            self.ssh_public_key = pulumi.Output.from_input(config.ssh.public_key)
            self.ssh_private_key = pulumi.Output.secret(config.ssh.private_key)

        self.network = libvirt.Network(
            f"{name}-network",
            name=network.name,
            mode="nat",
            addresses=[str(network.cidr)],
            # Static addresses only: a DHCP server would hand out leases that fight the netplan config.
            dhcp={"enabled": False},
            dns={"enabled": True},
            autostart=True,
            opts=child,
        )
        self.base_image = libvirt.Volume(
            f"{name}-base-image",
            name=f"{network.name}-{config.image.file_name}",
            pool=config.storage_pool,
            # Read once by the provider (downloaded, or a local file uploaded); every node disk is a CoW child of it.
            source=config.image.source,
            format="qcow2",
            opts=child,
        )

        self.nodes = {}
        for spec in config.nodes:
            self.nodes[spec.name] = Node(
                spec.name,
                NodeArgs(
                    spec=spec,
                    network=network,
                    ssh_user=config.ssh.user,
                    authorized_key=self.ssh_public_key,
                    base_volume_id=self.base_image.id,
                    network_id=self.network.id,
                    pool=config.storage_pool,
                    protect=config.protect_control_plane and spec.is_control_plane,
                    accelerator=config.accelerator,
                    timeouts=config.timeouts,
                ),
                opts=child,
            )
        self.register_outputs(
            {
                "networkId": self.network.id,
                "baseImageId": self.base_image.id,
                "nodes": {node_name: node.ip for node_name, node in self.nodes.items()},
            }
        )
