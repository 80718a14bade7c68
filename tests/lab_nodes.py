"""Reaching lab nodes from tests as the stack's steps reach them: over SSH from inside the lab namespace, with the
connection (address, user, the stack's key, the pinned host key) the engine sent each step, read back from the state.
Shared by the engine tests and the cluster test."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.mockrun import SECRET_SIG, SECRET_VALUE

# What a step logs when it changes the node (lib/common.sh's put_file and apt calls, os-prep's swapoff and ufw,
# os-apt-sources' moves, a file removed, a service (re)started). A second run must log none of them: its guards find
# everything done.
CHANGE_MARKERS = ("wrote /", "turning swap off", "disabling ", "restoring ", "removing ", "starting ", "apt-get ", "fetching ")


def revealed(value: object) -> object:
    """A value from `stack.export_stack()` (secrets shown) with the secret wrappers removed, recursively."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return json.loads(value["plaintext"]) if "plaintext" in value else revealed(value.get("value"))
        return {key: revealed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [revealed(item) for item in value]
    return value


@dataclass(frozen=True)
class NodeShell:
    """One lab node over SSH, as the stack's steps reach it: its address and user, the stack's key, the host key the
    stack pinned (StrictHostKeyChecking=yes: a guest presenting another key fails every call). Calls share one
    connection per node (ControlMaster), since each new login costs a TCG guest about a second."""

    name: str
    ip: str
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."
    key_file: Path
    known_hosts: Path
    control_path: str

    def options(self, *extra: str, known_hosts: Path | None = None, multiplex: bool = True) -> list[str]:
        """ssh's options (the first value of an option wins, so each appears once here; `extra` adds others)."""
        control = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}", "-o", "ControlPersist=300"]
        return [
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}", "-o", "ServerAliveInterval=10",
            "-o", "ServerAliveCountMax=6", *(control if multiplex else ["-o", "ControlPath=none"]), *extra,
        ]  # fmt: skip

    def argv(self, command: str, multiplex: bool = True) -> list[str]:
        return ["ssh", *self.options("-i", str(self.key_file), "-o", "IdentitiesOnly=yes", multiplex=multiplex), f"{self.user}@{self.ip}", command]

    def run(self, command: str, stdin: str = "", timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(command), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{self.name}: `{command[:100]}` exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            )
        return done

    def start(self, command: str) -> subprocess.Popen[str]:
        """`command` running in the background, on a connection of its own (the node may vanish under it)."""
        return subprocess.Popen(self.argv(command, multiplex=False), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        subprocess.run(["ssh", *self.options("-O", "exit"), f"{self.user}@{self.ip}"], capture_output=True, timeout=30)


@contextmanager
def node_shells(resources: Mapping[str, dict], names: Sequence[str]) -> Iterator[dict[str, NodeShell]]:
    """A NodeShell per node, from the connection its wait-for-boot step was given (`resources`: name -> state)."""
    scratch = Path(tempfile.mkdtemp(prefix="kvl-ssh-"))  # short: a ControlPath is a unix socket path (108 bytes)
    shells = {}
    try:
        for name in names:
            if f"{name}-wait-for-boot" not in resources:
                raise AssertionError(f"{name}: the up did not reach it (no wait-for-boot in the state)")
            connection = revealed(resources[f"{name}-wait-for-boot"]["inputs"]["connection"])
            key_file, known_hosts = scratch / f"{name}.key", scratch / f"{name}.known_hosts"
            key_file.write_text(connection["privateKey"].rstrip("\n") + "\n")
            key_file.chmod(0o600)
            known_hosts.write_text(f"{connection['host']} {connection['hostKey'].strip()}\n")
            shells[name] = NodeShell(
                name, connection["host"], connection["user"], connection["hostKey"].strip(), key_file, known_hosts, str(scratch / f"{name}.ctl")
            )
        yield shells
    finally:
        for shell in shells.values():
            shell.close()
        shutil.rmtree(scratch, ignore_errors=True)


def change_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(marker in line for marker in CHANGE_MARKERS)]
