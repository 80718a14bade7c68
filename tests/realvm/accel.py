"""Choose between KVM and TCG by trying KVM, not by trusting that /dev/kvm exists.

Some hosts expose a /dev/kvm that cannot run an unmodified guest kernel (nested or
paravirtual hypervisors); QEMU then starts but the guest never boots. A short probe boot
that waits for the kernel to reach the point of starting init tells the two apart.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .image import GuestImage
from .l2hub import die_with_parent, stop_process

# Printed by the kernel just before it runs init: proof the guest really executes.
_BOOTED_MARKER = b"Freeing unused kernel"
_PROBE_SECONDS = 10.0  # a working KVM gets there in 1-2 s
_OVERRIDE_ENV = "REALVM_ACCEL"


@dataclass(frozen=True)
class Accel:
    """QEMU arguments for one accelerator, and why it was chosen."""

    name: str  # "kvm" or "tcg"
    args: tuple[str, ...]
    reason: str

    @classmethod
    def kvm(cls, reason: str) -> Accel:
        return cls("kvm", ("-accel", "kvm", "-cpu", "host"), reason)

    @classmethod
    def tcg(cls, reason: str) -> Accel:
        # qemu64: the plain baseline CPU; TCG emulates every feature it advertises, and more is slower
        return cls("tcg", ("-accel", "tcg", "-cpu", "qemu64"), reason)


@functools.cache
def detect_accel(image: GuestImage) -> Accel:
    """KVM if a probe guest boots with it, else TCG. Decided once per process (per image).

    Set REALVM_ACCEL=kvm or REALVM_ACCEL=tcg to skip the probe.
    """
    verdict = _decide(image)
    print(f"[realvm.accel] using {verdict.name}: {verdict.reason}", file=sys.stderr, flush=True)
    return verdict


def _decide(image: GuestImage) -> Accel:
    forced = os.environ.get(_OVERRIDE_ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel.kvm(f"forced by {_OVERRIDE_ENV}") if forced == "kvm" else Accel.tcg(f"forced by {_OVERRIDE_ENV}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel.tcg("/dev/kvm is missing or not accessible")
    seconds = _probe_kvm(image)
    if seconds is None:
        return Accel.tcg(f"a KVM probe guest did not boot within {_PROBE_SECONDS:.0f} s")
    return Accel.kvm(f"a KVM probe guest booted its kernel in {seconds:.1f} s")


def _probe_kvm(image: GuestImage) -> float | None:
    """Seconds until the probe kernel reached init under KVM, or None if it never did."""
    with tempfile.TemporaryDirectory(prefix="realvm-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        command = [
            "qemu-system-x86_64", *Accel.kvm("probe").args, "-machine", "pc", "-m", "256", "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            # no root disk: the kernel boots into the initrd, which then waits for a root
            # device forever; reaching that point is all the probe needs
            "-append", "console=ttyS0",
        ]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        try:
            while time.monotonic() - started < _PROBE_SECONDS:
                exited = process.poll() is not None
                if console.exists() and _BOOTED_MARKER in console.read_bytes():
                    return time.monotonic() - started
                if exited:
                    return None
                time.sleep(0.2)
            return None
        finally:
            stop_process(process, grace_seconds=5)
