"""The real-VM tests' guest image: the lab's image (lab/image.py), booted by direct kernel boot.

There is one image builder, lab.image. Its disk boots on its own (GRUB on an MBR disk, as a cloud image does); the
harness boots the kernel and initrd exported next to it instead, with the disk's partition as root, which skips
the BIOS and bootloader and keeps the KVM probe (accel.py) a kernel-only boot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.image import BASE_PACKAGES, ROOT_LABEL, ensure_image

# Kept for callers that caught the harness's own error before the builder moved to lab.image.
ImageBuildError = LabError


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: direct kernel boot of ``kernel``/``initrd`` with ``rootfs`` as /dev/vda (root on vda1)."""

    kernel: Path
    initrd: Path
    rootfs: Path  # qcow2; use it only as the backing file of per-VM overlays
    kernel_args: str = f"root=LABEL={ROOT_LABEL} rw console=ttyS0"


def ensure_guest_image(cache_dir: Path, extra_packages: Sequence[str] = ()) -> GuestImage:
    """Return the cached image for this package set under ``cache_dir``, building it first if it is missing."""
    built = ensure_image(Path(cache_dir), (*BASE_PACKAGES, *extra_packages))
    return GuestImage(kernel=built.kernel, initrd=built.initrd, rootfs=built.disk)
