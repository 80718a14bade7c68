"""Real-VM test harness: boot the rendered cloud-init seeds in QEMU guests and reach them over SSH.

    image = ensure_guest_image(cache_dir)
    with boot_nodes(image, [NodeBoot(name, mac, ip, seed), ...], "192.168.141.0/24", "192.168.141.1",
                    workdir, ssh_key=private_key_path) as nodes:
        nodes[0].ssh("cloud-init status --wait", check=True)

Needs root and the host packages listed in README.md. See README.md for how the node network works.
"""

from .accel import Accel, detect_accel
from .image import GuestImage, ImageBuildError, ensure_guest_image
from .node import NodeError, RunningNode
from .qemu import NodeBoot, boot_nodes

__all__ = [
    "Accel",
    "GuestImage",
    "ImageBuildError",
    "NodeBoot",
    "NodeError",
    "RunningNode",
    "boot_nodes",
    "detect_accel",
    "ensure_guest_image",
]
