"""Stand-in for the `command` plugin's remote.Command (see __init__.py), over the OpenSSH client.

Semantics follow pulumi-command 1.2: `create` runs once; a change of any input runs `update` (or `create` again);
`delete` runs on delete with the previous stdout/stderr in PULUMI_COMMAND_STDOUT/STDERR when
addPreviousOutputInEnv is on; a dial is retried up to dialErrorLimit times (-1: no limit) with the SDK's backoff
(100 ms x1.5, capped at 5 s), each attempt bounded by perDialTimeout. A pinned hostKey is checked strictly; a
mismatch is not a dial error and fails at once. The step's custom timeout bounds the whole run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi.provider.experimental import provider as p
from pulumi.provider.experimental.property_value import PropertyValue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from base import StepFailed, is_unknown, own_type, plain_map, serve, wrap  # noqa: E402

VERSION = os.environ.get("KUBEADM_LIBVIRT_LAB_COMMAND_VERSION", "1.2.1")
REMOTE_COMMAND = "command:remote:Command"
INPUTS = ("connection", "create", "update", "delete", "environment", "stdin", "triggers", "logging",
          "addPreviousOutputInEnv")  # fmt: skip
# ssh's own exit status for a failed connection; the remote command's status otherwise.
SSH_FAILED = 255
# What ssh prints when it could not reach sshd at all: worth another dial while a VM boots.
DIAL_ERRORS = ("Connection refused", "Connection timed out", "No route to host", "Connection reset",
               "kex_exchange_identification", "Connection closed by", "Network is unreachable",
               "banner exchange", "Operation timed out")  # fmt: skip
STDERR_TAIL = 4000


@dataclass(frozen=True)
class Connection:
    host: str
    port: int
    user: str
    private_key: str | None
    host_key: str | None
    dial_error_limit: int
    per_dial_timeout: int

    @classmethod
    def from_inputs(cls, raw: dict[str, Any]) -> Connection:
        unsupported = sorted(key for key in ("password", "proxy", "agentSocketPath", "privateKeyPassword") if raw.get(key))
        if unsupported:
            raise StepFailed(f"the lab's command stand-in does not implement connection {', '.join(unsupported)}")
        return cls(
            host=raw["host"],
            port=int(raw.get("port") or 22),
            user=raw.get("user") or "root",
            private_key=raw.get("privateKey"),
            host_key=raw.get("hostKey"),
            dial_error_limit=int(raw.get("dialErrorLimit", 10)),
            per_dial_timeout=int(raw.get("perDialTimeout", 15)),
        )


async def run_remote(
    connection: Connection, command: str, stdin: str | None, environment: dict[str, str], deadline: float
) -> tuple[str, str]:
    """Run `command` on the host; (stdout, stderr). Raises StepFailed naming the host and the cause."""
    with tempfile.TemporaryDirectory(prefix="lab-command-") as scratch:
        options = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connection.per_dial_timeout or 600}",
                   "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8", "-p", str(connection.port)]  # fmt: skip
        if connection.private_key:
            key = Path(scratch, "id")
            key.write_text(connection.private_key if connection.private_key.endswith("\n") else connection.private_key + "\n")
            key.chmod(0o600)
            options += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        if connection.host_key:
            known = Path(scratch, "known_hosts")
            host = connection.host if connection.port == 22 else f"[{connection.host}]:{connection.port}"
            known.write_text(f"{host} {connection.host_key.strip()}\n")
            options += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}"]
        else:
            options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        for name, value in environment.items():
            options += ["-o", f"SetEnv={name}={value}"]
        argv = ["ssh", *options, f"{connection.user}@{connection.host}", command]

        failures, delay = 0, 0.1
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"{connection.host}: timed out before the command finished")
            # A blocking run in a worker thread, bounded by the step's deadline: simpler to reason about than an
            # asyncio child watcher, and a hung ssh is killed rather than waited on.
            try:
                done = await asyncio.to_thread(
                    subprocess.run, argv, input=(stdin or "").encode(), capture_output=True, timeout=remaining
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(f"{connection.host}: the command ran past the step's timeout and was stopped") from None
            out, err, returncode = done.stdout, done.stderr, done.returncode
            stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
            if returncode == 0:
                return stdout, stderr
            if returncode == SSH_FAILED and "Host key verification failed" in stderr:
                raise StepFailed(
                    f"{connection.host}: host key mismatch: the host does not present the pinned key {connection.host_key.split()[0]}"
                    " (a different machine answers at this address)"
                )
            if returncode == SSH_FAILED and any(marker in stderr for marker in DIAL_ERRORS):
                failures += 1
                if 0 <= connection.dial_error_limit < failures:
                    raise StepFailed(
                        f"{connection.host}:{connection.port}: unreachable after {failures} dial attempts: {stderr.strip()[-300:]}"
                    )
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.5, 5.0)
                continue
            raise StepFailed(
                f"Process exited with status {returncode} on {connection.host}\n"
                f"stdout: {stdout[-STDERR_TAIL:]}\nstderr: {stderr[-STDERR_TAIL:]}"
            )


class CommandProvider(p.Provider):
    async def configure(self, request: p.ConfigureRequest) -> p.ConfigureResponse:
        return p.ConfigureResponse(accept_secrets=True, supports_preview=True, accept_resources=True, accept_outputs=True)

    async def check(self, request: p.CheckRequest) -> p.CheckResponse:
        inputs = dict(request.new_inputs)
        inputs.setdefault("addPreviousOutputInEnv", wrap(True))
        inputs.setdefault("logging", wrap("stdoutAndStderr"))
        return p.CheckResponse(inputs=inputs)

    async def diff(self, request: p.DiffRequest) -> p.DiffResponse:
        old, new = plain_map(request.old_state), plain_map(request.new_inputs)
        changed = [key for key in INPUTS if old.get(key) != new.get(key) and not (old.get(key) is None and new.get(key) is None)]
        # Without an update command, changed triggers mean a new resource (the SDK also sets replaceOnChanges).
        replaces = ["triggers"] if "triggers" in changed and not new.get("update") else []
        detail = {
            key: p.PropertyDiff(p.PropertyDiffKind.UPDATE_REPLACE if key in replaces else p.PropertyDiffKind.UPDATE, True)
            for key in changed
        }
        return p.DiffResponse(changes=bool(changed), replaces=replaces, diffs=changed, detailed_diff=detail)

    async def create(self, request: p.CreateRequest) -> p.CreateResponse:
        self._require_type(own_type(request.type))
        properties = dict(request.properties)
        if request.preview or is_unknown(plain_map(request.properties)):
            properties["stdout"] = PropertyValue.computed()
            properties["stderr"] = PropertyValue.computed()
            return p.CreateResponse(resource_id="", properties=properties)
        inputs = plain_map(request.properties)
        stdout, stderr = await self._run(inputs, inputs.get("create"), request.timeout, previous=None)
        properties["stdout"], properties["stderr"] = wrap(stdout), wrap(stderr)
        return p.CreateResponse(resource_id=f"{request.name}{os.urandom(4).hex()}", properties=properties)

    async def update(self, request: p.UpdateRequest) -> p.UpdateResponse:
        properties = {**request.news}
        if request.preview or is_unknown(plain_map(request.news)):
            properties["stdout"] = PropertyValue.computed()
            properties["stderr"] = PropertyValue.computed()
            return p.UpdateResponse(properties=properties)
        news, olds = plain_map(request.news), plain_map(request.olds)
        command = news.get("update") or news.get("create")
        stdout, stderr = await self._run(news, command, request.timeout, previous=olds)
        properties["stdout"], properties["stderr"] = wrap(stdout), wrap(stderr)
        return p.UpdateResponse(properties=properties)

    async def delete(self, request: p.DeleteRequest) -> None:
        state = plain_map(request.properties)
        if state.get("delete"):
            await self._run(state, state["delete"], request.timeout, previous=state)

    async def read(self, request: p.ReadRequest) -> p.ReadResponse:
        # As pulumi-command: a command's state is what it printed; refresh does not re-run it.
        return p.ReadResponse(resource_id=request.resource_id, properties=request.properties, inputs=request.inputs)

    @staticmethod
    def _require_type(resource_type: str) -> None:
        if resource_type != REMOTE_COMMAND:
            raise StepFailed(f"the lab's command stand-in implements {REMOTE_COMMAND} only, not {resource_type}")

    @staticmethod
    async def _run(inputs: dict[str, Any], command: str | None, timeout: float, previous: dict[str, Any] | None) -> tuple[str, str]:
        if not command:
            return "", ""
        environment = dict(inputs.get("environment") or {})
        if previous is not None and inputs.get("addPreviousOutputInEnv", True):
            environment["PULUMI_COMMAND_STDOUT"] = previous.get("stdout") or ""
            environment["PULUMI_COMMAND_STDERR"] = previous.get("stderr") or ""
        deadline = time.monotonic() + (timeout if timeout and timeout > 0 else 20 * 60)
        connection = Connection.from_inputs(inputs["connection"])
        return await run_remote(connection, command, inputs.get("stdin"), environment, deadline)


if __name__ == "__main__":
    serve(VERSION, CommandProvider())
