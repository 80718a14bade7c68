"""kubeadm-libvirt: `pulumi up` builds the VMs on libvirt, then a kubeadm cluster on them."""

import pulumi

from components.infrastructure import Infrastructure
from components.kubeadm_cluster import KubeadmCluster, KubeadmClusterArgs
from components.stack_config import load_cluster_config

# Validates every key at once and stops here, before any resource is registered, when something is wrong.
config = load_cluster_config()

infrastructure = Infrastructure("kubeadm-libvirt", config)
cluster = KubeadmCluster(
    "kubeadm",
    KubeadmClusterArgs(config=config, nodes=infrastructure.nodes, ssh_private_key=infrastructure.ssh_private_key),
)

pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("joinCommand", cluster.join_command)
pulumi.export("controlPlaneEndpoint", cluster.control_plane_endpoint)
pulumi.export("kubernetesVersion", cluster.kubernetes_version)
pulumi.export("nodes", {node.name: {"ip": str(node.ip), "role": node.role} for node in config.nodes})
pulumi.export("controlPlaneSchedulable", config.control_plane_schedulable)
if config.ssh.generates_key_pair:
    pulumi.export("sshPrivateKey", infrastructure.ssh_private_key)
