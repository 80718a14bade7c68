"""Where the lab keeps what outlives a clone: built toolchains, guest images, host state.

Caches live outside the clone so later runs and CI on the same machine reuse them; KUBEADM_LIBVIRT_LAB_CACHE moves
them (a test points it at a temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/kubeadm-libvirt-lab")


def cache_root() -> Path:
    return Path(os.environ.get("KUBEADM_LIBVIRT_LAB_CACHE", DEFAULT_CACHE))


def toolchain_root() -> Path:
    return cache_root() / "toolchain"


def images_root() -> Path:
    return cache_root() / "images"


def host_state_root() -> Path:
    """Run-time state of lab hosts (pids, sockets, daemon config): not a cache, removed by `lab host stop`."""
    return Path(os.environ.get("KUBEADM_LIBVIRT_LAB_RUN", "/run/kubeadm-libvirt-lab"))


def host_data_root() -> Path:
    """Where lab hosts keep large data (the storage pools): on disk, not in /run. KUBEADM_LIBVIRT_LAB_DATA moves it;
    removed by `lab host stop` too."""
    return Path(os.environ.get("KUBEADM_LIBVIRT_LAB_DATA", "/var/lib/kubeadm-libvirt-lab"))
