"""Address math that is not plain `ipaddress`: the stable MAC of a node."""

from __future__ import annotations

import hashlib
import ipaddress

# QEMU/KVM's OUI: libvirt uses it for generated MACs too, so tools recognise these as VM NICs.
QEMU_OUI = "52:54:00"


def derive_mac(name: str, ip: ipaddress.IPv4Address) -> str:
    """A MAC that depends only on the node's name and IP, so re-rendering never changes it.

    The same MAC is written into the domain's NIC and into netplan's `match: {macaddress}`; keeping it stable keeps
    both inputs unchanged when other nodes are added.
    """
    digest = hashlib.sha256(f"{name}/{ip}".encode()).digest()
    return QEMU_OUI + "".join(f":{byte:02x}" for byte in digest[:3])
