"""The configuration a lab stack runs with: what differs from the dev stack because the lab is this machine.

The lab host's libvirt socket, the locally built guest image, software emulation (no usable KVM here), timeouts
scaled for it, and the smallest topology that proves the chain (a control plane and one worker). Everything else is
the project's defaults from Pulumi.yaml, as for any user's stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    }
