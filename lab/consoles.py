"""Every lab VM's serial console, kept in a file: what a guest printed before it stopped answering.

A VM that never reaches SSH leaves the engine nothing to say but "unreachable" (seen once in CI: a worker that
booted with its control plane was still unreachable 50 minutes later). The stack's domains have a pty serial
console, and the guest kernel and cloud-init write to it; QEMU drops console output while nobody holds the pty
open, so a recorder attaches to each domain's pty as soon as the domain runs and appends what it reads to
`<dir>/<domain>.log`, one file per domain name across restarts and replacements (each attach starts with a marker).
"""

from __future__ import annotations

import os
import termios
import threading
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.host import LabHost

POLL_SECONDS = 0.5  # how soon after a domain starts its console is attached: a TCG boot takes a minute to SSH
READ_BYTES = 4096
ATTACHED = "----- console attached:"  # starts what one run of a domain printed


class ConsoleRecorder:
    """Attaches to the pty of each running domain of a lab host and copies it into `directory`; stop() ends it."""

    def __init__(self, host: LabHost, directory: Path) -> None:
        self.host = host
        self.directory = directory
        self._stopped = threading.Event()
        self._attached: dict[str, threading.Thread] = {}  # "<domain>:<pty>" of each live copy
        self._poller = threading.Thread(target=self._poll, name="lab-consoles", daemon=True)

    def start(self) -> ConsoleRecorder:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._poller.join(timeout=10)
        for copier in list(self._attached.values()):
            copier.join(timeout=2)

    def text(self, domain: str) -> str:
        """Everything recorded from a domain's console so far ("" when nothing was)."""
        path = self.directory / f"{domain}.log"
        return path.read_bytes().decode(errors="replace").replace("\r", "") if path.exists() else ""

    def last_run(self, domain: str) -> str:
        """What the domain's latest run (since the recorder last attached to it) printed."""
        return self.text(domain).rsplit(ATTACHED, 1)[-1]

    def tail(self, domain: str, lines: int = 40) -> str:
        """The last `lines` lines a domain's console printed (for a failure message)."""
        text = self.text(domain)
        return "\n".join(text.splitlines()[-lines:]) if text else f"(no console output recorded for {domain})"

    def _poll(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            try:
                domains = self.host.virsh("list", "--name", timeout=10).split()
            except Exception:  # a host that is stopping: keep polling until stop()
                continue
            for domain in domains:
                try:
                    pty = self.host.virsh("ttyconsole", domain, timeout=10).strip()
                except Exception:
                    continue
                key = f"{domain}:{pty}"
                if pty.startswith("/dev/pts/") and key not in self._attached:
                    copier = threading.Thread(target=self._copy, args=(domain, pty, key), name=f"console-{domain}", daemon=True)
                    self._attached[key] = copier
                    copier.start()

    def _copy(self, domain: str, pty: str, key: str) -> None:
        try:
            fd = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
        except OSError:
            self._attached.pop(key, None)
            return
        try:
            # Raw, no echo: with echo on, the guest would read its own output back as console input.
            tty.setraw(fd, termios.TCSANOW)
            with open(self.directory / f"{domain}.log", "ab") as log:
                log.write(f"\n{ATTACHED} {domain} ({pty}) -----\n".encode())
                while not self._stopped.is_set():
                    try:
                        chunk = os.read(fd, READ_BYTES)
                    except OSError:  # EIO: QEMU closed the pty (the domain stopped)
                        break
                    if not chunk:
                        break
                    log.write(chunk)
                    log.flush()
        finally:
            os.close(fd)
            self._attached.pop(key, None)


@contextmanager
def recording(host: LabHost, directory: Path) -> Iterator[ConsoleRecorder]:
    recorder = ConsoleRecorder(host, directory).start()
    try:
        yield recorder
    finally:
        recorder.stop()
