"""Move the calling thread, and every process and thread it starts afterwards, into a lab host's network namespace.

The lab's Pulumi CLI must run inside the namespace (its plugins dial the VMs there), and with an inline program the
CLI calls back into this Python process's language server on 127.0.0.1. Both ends must share one loopback, so the
Python process itself joins the namespace before it starts the CLI: `ip netns exec` on the CLI alone would cut it
off from the language server. Only the network namespace changes; files and the libvirt socket stay where they are.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.errors import LabError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def join(namespace: str) -> None:
    """Join `namespace` (made by `ip netns add`). Affects the calling thread and what it starts from now on."""
    path = NETNS_DIR / namespace
    if not path.exists():
        raise LabError(f"network namespace {namespace} does not exist: start the lab host first (python3 -m lab host start)")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise LabError(f"cannot join network namespace {namespace}: {os.strerror(error)} (needs root)")
    finally:
        os.close(fd)


@contextmanager
def joined(namespace: str) -> Iterator[None]:
    """Run the body inside `namespace`, then return the calling thread to the namespace it was in."""
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join(namespace)
        yield
    finally:
        ctypes.CDLL(None, use_errno=True).setns(original, CLONE_NEWNET)
        os.close(original)
