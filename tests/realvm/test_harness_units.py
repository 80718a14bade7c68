"""Pure parts of the real-VM harness, checked without booting anything."""

from __future__ import annotations

import pytest

from .l2hub import route

NODES = ("a", "b", "c")
MAC_A, MAC_B = bytes.fromhex("525400000001"), bytes.fromhex("525400000002")
SLIRP = bytes.fromhex("5255c0a88d01")  # what slirp uses for gateway 192.168.141.1
BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x08\x00" + b"\x00" * 46


@pytest.mark.parametrize(
    ("dst", "src", "from_slirp", "expected"),
    [
        (SLIRP, MAC_A, False, [("a", True)]),  # to the gateway: own slirp only
        (BROADCAST, MAC_A, False, [("a", True), ("b", False), ("c", False)]),  # ARP: own slirp and the other NICs
        (MAC_B, MAC_A, False, [("b", False), ("c", False)]),  # unknown unicast: other NICs, never a slirp
        (MAC_A, SLIRP, True, [("a", False)]),  # a slirp only ever talks to its own NIC
        (BROADCAST, SLIRP, True, [("a", False)]),
        (MAC_B, SLIRP, False, []),  # a guest posing as slirp is dropped
    ],
)
def test_route(dst: bytes, src: bytes, from_slirp: bool, expected: list[tuple[str, bool]]) -> None:
    assert route(frame(dst, src), "a", from_slirp, NODES, {}) == expected


def test_route_learns_where_a_mac_lives() -> None:
    table: dict[bytes, str] = {}
    route(frame(BROADCAST, MAC_B), "b", False, NODES, table)
    assert route(frame(MAC_B, MAC_A), "a", False, NODES, table) == [("b", False)]

