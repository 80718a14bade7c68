"""The bootstrap token each worker joins with: its id, derived from the worker's name.

A worker's token is minted on the control plane without an expiry (`--ttl 0`) and deleted once the worker has
joined (steps.join_token, scripts/join-token.sh): a join retried hours or days later still finds it, and no token
outlives its use. Deleting it, or replacing one left over, needs its id; deriving the id from the worker's name
keeps every step's inputs deterministic (an unchanged stack previews as no change) and lets the clean-up name the
token without holding it. The id is not a secret (kubeadm publishes it in the cluster-info ConfigMap's JWS key
names); the secret half is generated on the control plane and travels only in secret outputs and stdin.
"""

from __future__ import annotations

import hashlib
import re

# kubeadm's bootstrap token format: "<id>.<secret>", 6 and 16 characters of [a-z0-9].
TOKEN_ID = re.compile(r"^[a-z0-9]{6}$")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 6


def join_token_id(worker_name: str) -> str:
    """Six base-36 digits of a hash of the name: 36^6 ids, so two workers of a large cluster share one with a
    chance of about n^2 / 4.4e9 (validation refuses that case: one token would replace the other's)."""
    number = int.from_bytes(hashlib.sha256(f"kubeadm-libvirt join token {worker_name}".encode()).digest(), "big")
    digits = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(digits)
