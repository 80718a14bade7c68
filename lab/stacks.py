"""The configuration a lab stack runs with: what differs from the dev stack because the lab is this machine.

The lab host's libvirt socket, the locally built guest image, software emulation (no usable KVM here), timeouts
scaled for it, and the smallest topology that proves the chain (a control plane and one worker). Everything else is
the project's defaults from Pulumi.yaml, as for any user's stack.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from lab.mirror_services import MirrorEndpoints

LAB_NETWORK = {"name": "kvl-lab", "cidr": "192.168.150.0/24"}
LAB_NODES = (
    {"name": "lab-cp", "role": "control-plane", "ip": "192.168.150.10"},
    {"name": "lab-w1", "role": "worker", "ip": "192.168.150.11"},
)
# TCG runs a guest about 10x slower than KVM (shared/notes/offline-lab.md): every bound scaled by 4.
LAB_TIMEOUT_SCALE = 4


def lab_stack_config(libvirt_uri: str, image: Path | str, nodes: tuple[dict[str, Any], ...] = LAB_NODES) -> dict[str, Any]:
    return {
        "libvirt:uri": libvirt_uri,
        "kubeadm-libvirt:nodes": list(nodes),
        "kubeadm-libvirt:network": LAB_NETWORK,
        "kubeadm-libvirt:imageUrl": str(image),
        "kubeadm-libvirt:accelerator": "tcg",
        "kubeadm-libvirt:timeoutScale": LAB_TIMEOUT_SCALE,
        # Calico's API server is two more pods and an aggregated API the control plane's controllers keep
        # discovering: on 2 cores under TCG, load that slowed all of Calico's start (lab run 10: one of its pods took
        # 50 minutes to get a sandbox). Off, as Kubespray's default (calico_apiserver_enabled: false).
        "kubeadm-libvirt:calicoApiServer": False,
    }


# The lab network's gateway: the bridge libvirt puts on the first host address, inside the lab's namespace, where
# lab/mirror_services.py serves the mirror. The VMs reach it; nothing outside the namespace does.
LAB_GATEWAY = str(next(ipaddress.ip_network(LAB_NETWORK["cidr"]).hosts()))
OS_ARCHIVE_KEYRING = "/etc/apt/keyrings/kubeadm-libvirt-os.gpg"  # the path osAptSources entries must name


def mirrored_cluster_config(mirror: MirrorEndpoints, kubernetes_version: str, calico_version: str) -> dict[str, Any]:
    """What an air-gapped user sets, pointed at the lab mirror: every package and image source, the OS-archive
    runtime (Docker's repository is out of reach), the mirror's exact Kubernetes patch and the Calico it built.
    That Calico (3.28, the newest whose operator builds from Go modules here) is not one Calico tests with this
    Kubernetes minor: the stack runs it under allowUntestedCalico, and says so in every preview."""
    return {
        "kubeadm-libvirt:kubernetesVersion": kubernetes_version.lstrip("v"),
        "kubeadm-libvirt:calicoVersion": calico_version.lstrip("v"),
        "kubeadm-libvirt:allowUntestedCalico": True,
        "kubeadm-libvirt:calicoManifestUrl": mirror.calico_manifest_url,
        "kubeadm-libvirt:calicoRegistry": mirror.calico_registry,
        "kubeadm-libvirt:smokeImage": mirror.smoke_image,
        "kubeadm-libvirt:kubernetesAptMirror": mirror.kubernetes_apt_mirror,
        "kubeadm-libvirt:imageRepository": mirror.image_repository,
        "kubeadm-libvirt:containerRuntimeSource": "os-archive",
        "kubeadm-libvirt:osAptSources": [f"deb [signed-by={OS_ARCHIVE_KEYRING}] {mirror.debian_archive} bookworm main"],
        "kubeadm-libvirt:osAptKeyUrl": f"{mirror.debian_archive}/archive.key",
        "kubeadm-libvirt:registries": [{"host": mirror.registry, "plainHttp": True}],
    }
