"""A tiny userspace Ethernet switch joining the test VMs, with no host bridge or tap device.

Every QEMU talks to this process over unix datagram sockets (``-netdev dgram``): one port
for the guest's NIC and one for that guest's own user-mode network (slirp, which gives SSH
through a 127.0.0.1 port forward). The switch keeps each slirp private to its guest:

* a slirp only ever hears its own guest, and only frames addressed to a slirp MAC or broadcast;
* a slirp's frames only ever reach its own guest.

Why not one QEMU hub per guest joining NIC, slirp and the switch? A restricted slirp answers
every TCP segment it has no socket for with a RST. On a shared hub it sees the guest's SYNs to
the other VMs and resets those connections before the real peer can answer; and the three
slirps, all using the gateway address, would answer each other's ARP.

Run as a script (it imports nothing from this package): see ``L2Hub`` below.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# libslirp gives each of its virtual hosts (gateway, DNS) the MAC 52:55:<its IPv4 address>.
SLIRP_MAC_PREFIX = bytes.fromhex("5255")
_MAX_FRAME = 65536


@dataclass(frozen=True)
class HubPort:
    """Where one VM's two QEMU dgram netdevs are bound."""

    node: str
    nic_socket: Path
    slirp_socket: Path


def is_slirp_mac(mac: bytes) -> bool:
    return mac[:2] == SLIRP_MAC_PREFIX


def route(frame: bytes, from_node: str, from_slirp: bool, nodes: Iterable[str], mac_table: dict[bytes, str]) -> list[tuple[str, bool]]:
    """Where a frame goes, as (node, to_slirp) pairs. Learns the sender's MAC into ``mac_table``."""
    if len(frame) < 14:
        return []
    dst, src = frame[0:6], frame[6:12]
    if from_slirp:
        return [(from_node, False)]
    if is_slirp_mac(src):
        return []  # a guest must never speak as a slirp host
    mac_table[src] = from_node
    if is_slirp_mac(dst):
        return [(from_node, True)]
    others = [node for node in nodes if node != from_node]
    if dst[0] & 1:  # broadcast or multicast: e.g. ARP for the gateway or for another node
        return [(from_node, True), *((node, False) for node in others)]
    owner = mac_table.get(dst)
    if owner is not None:
        return [] if owner == from_node else [(owner, False)]
    return [(node, False) for node in others]


def serve(hub_socket: Path, ports: Sequence[HubPort]) -> None:
    by_address = {}
    for port in ports:
        by_address[str(port.nic_socket)] = (port.node, False)
        by_address[str(port.slirp_socket)] = (port.node, True)
    address_of = {value: key for key, value in by_address.items()}
    nodes = [port.node for port in ports]
    mac_table: dict[bytes, str] = {}
    seen_sources: set[tuple[bytes, str]] = set()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
    sock.bind(str(hub_socket))
    _log(f"listening on {hub_socket} for {', '.join(nodes)}")
    while True:
        frame, sender = sock.recvfrom(_MAX_FRAME)
        origin = by_address.get(sender)
        if origin is None:
            continue
        source = (frame[6:12], sender)
        if source not in seen_sources:
            # the first frame from each MAC on each port; this log is how the slirp MAC was checked
            seen_sources.add(source)
            _log(f"{frame[6:12].hex(':')} on {origin[0]}/{'slirp' if origin[1] else 'nic'}")
        for target in route(frame, origin[0], origin[1], nodes, mac_table):
            try:
                sock.sendto(frame, socket.MSG_DONTWAIT, address_of[target])
            except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
                pass  # the peer is not up yet, gone, or full: drop like a real switch


class L2Hub:
    """Runs the switch as a child process (``with L2Hub(...) as hub:``); stops it on exit."""

    def __init__(self, hub_socket: Path, ports: Sequence[HubPort], log_path: Path, start_timeout: float = 10.0) -> None:
        self.hub_socket = hub_socket
        self._ports = tuple(ports)
        self._log_path = log_path
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> L2Hub:
        command = [sys.executable, str(Path(__file__).resolve()), "--socket", str(self.hub_socket)]
        for port in self._ports:
            command += ["--port", f"{port.node}={port.nic_socket},{port.slirp_socket}"]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent)
        deadline = time.monotonic() + self._start_timeout
        while not self.hub_socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"L2 hub did not start; see {self._log_path}: {self._log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period; only this one process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if the test process dies, so nothing leaks.

    The signal follows the *thread* that forked, so start children from a long-lived thread.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _log(message: str) -> None:
    print(f"[l2hub] {message}", file=sys.stderr, flush=True)


def _parse_port(text: str) -> HubPort:
    node, _, paths = text.partition("=")
    nic, _, slirp = paths.partition(",")
    if not (node and nic and slirp):
        raise argparse.ArgumentTypeError(f"expected NODE=NIC_SOCKET,SLIRP_SOCKET, got {text!r}")
    return HubPort(node=node, nic_socket=Path(nic), slirp_socket=Path(slirp))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="unix datagram socket to bind")
    parser.add_argument("--port", type=_parse_port, action="append", required=True, help="NODE=NIC_SOCKET,SLIRP_SOCKET")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(args.socket, args.port)
    finally:
        if args.socket.exists():
            os.unlink(args.socket)


if __name__ == "__main__":
    main()
