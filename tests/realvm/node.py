"""A booted test VM, driven over SSH through its 127.0.0.1 port forward."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_POLL_SECONDS = 1.0
_SSH_CONNECT_TIMEOUT = 5
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # systemd colours its console status lines


class NodeError(RuntimeError):
    """A node failed to boot, to answer, or to run a command."""


@dataclass(frozen=True)
class RunningNode:
    """One VM started by ``boot_nodes``; valid until its ``with`` block ends."""

    name: str
    ip: str
    ssh_port: int
    serial_log: Path
    pid: int
    ssh_key: Path
    ssh_user: str
    started_at: float  # time.monotonic() when QEMU was started
    ssh_ready_seconds: float | None = None  # from QEMU start to the first SSH login
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def ssh(self, command: str, stdin: bytes | str | None = None, timeout: float = 120.0, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the node as the SSH user; output is decoded text."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        try:
            result = subprocess.run(
                [*self._ssh_base(), command],
                input=data if data is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise NodeError(f"{self.name}: `{command}` did not finish within {timeout:.0f} s\n{self._serial_report()}") from error
        completed = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))
        if check and completed.returncode != 0:
            raise NodeError(
                f"{self.name}: `{command}` exited {completed.returncode}\n--- stdout\n{completed.stdout[-4000:]}\n--- stderr\n{completed.stderr[-4000:]}"
            )
        return completed

    def wait_for_ssh(self, timeout: float = 300.0) -> float:
        """Poll until an SSH login works; return seconds since QEMU started."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            self._raise_if_qemu_exited()
            probe_timeout = max(1.0, min(_SSH_CONNECT_TIMEOUT * 3, deadline - time.monotonic()))
            try:
                result = subprocess.run([*self._ssh_base(), "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=probe_timeout)
                if result.returncode == 0:
                    return time.monotonic() - self.started_at
                last_error = result.stderr.decode(errors="replace").strip()
            except subprocess.TimeoutExpired:
                last_error = f"ssh probe hung for {probe_timeout:.0f} s"
            time.sleep(_POLL_SECONDS)
        raise NodeError(f"{self.name}: no SSH on 127.0.0.1:{self.ssh_port} within {timeout:.0f} s (last: {last_error})\n{self._serial_report()}")

    def reboot_and_wait(self, timeout: float = 300.0) -> float:
        """Reboot the guest (QEMU keeps running) and wait for SSH from the new boot; return seconds taken."""
        before = self._boot_id()
        started = time.monotonic()
        # --no-block: return before the connection is torn down under us
        result = self.ssh("sudo systemctl --no-block reboot", timeout=30)
        if result.returncode not in (0, 255):  # 255: ssh lost the connection, which is fine here
            raise NodeError(f"{self.name}: reboot command failed ({result.returncode}): {result.stderr.strip()}")
        deadline = started + timeout
        while time.monotonic() < deadline:
            self.wait_for_ssh(timeout=deadline - time.monotonic())
            after = self._boot_id(allow_failure=True)
            if after and after != before:
                return time.monotonic() - started
            time.sleep(_POLL_SECONDS)
        raise NodeError(f"{self.name}: did not come back from reboot within {timeout:.0f} s\n{self._serial_report()}")

    def serial_tail(self, lines: int = 60) -> str:
        if not self.serial_log.exists():
            return "(no serial output yet)"
        text = _ANSI_ESCAPE.sub("", self.serial_log.read_bytes().decode(errors="replace")).replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def _boot_id(self, allow_failure: bool = False) -> str:
        result = self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30, check=not allow_failure)
        return result.stdout.strip() if result.returncode == 0 else ""

    def _ssh_base(self) -> list[str]:
        return [
            "ssh", "-i", str(self.ssh_key), "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={_SSH_CONNECT_TIMEOUT}",
            f"{self.ssh_user}@127.0.0.1",
        ]  # fmt: skip

    def _raise_if_qemu_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            qemu_log = self.serial_log.with_name("qemu.log")
            stderr = qemu_log.read_text(errors="replace")[-2000:] if qemu_log.exists() else ""
            raise NodeError(f"{self.name}: QEMU exited with code {self._process.returncode}\n{stderr}\n{self._serial_report()}")

    def _serial_report(self) -> str:
        return f"--- last serial console lines of {self.name} ({self.serial_log}):\n{self.serial_tail()}"
