"""The real Pulumi engine on the lab: the lab toolchain's CLI and plugins, a file backend, passphrase secrets, and the
project's own `__main__.py` served as an Automation API inline program.

Why inline: the Python language host (`pulumi-language-python`) cannot be built here (lab/pins.yaml). With an inline
program the Automation API serves the language runtime from this Python process, and the CLI talks to it over gRPC;
everything else - the engine, the state, the plugins, the diff and the secrets - is the real CLI's. The program is the
unmodified `__main__.py`, run with `runpy` exactly as the language host would run it, in a copy of the project or in
the clone itself.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from components.project_files import PROJECT_ROOT, project_name
from lab.toolchain import Toolchain

DEFAULT_PASSPHRASE = "kubeadm-libvirt-lab"


@dataclass(frozen=True)
class Engine:
    """Where stacks live and which CLI runs them."""

    toolchain: Toolchain
    backend_dir: Path
    passphrase: str = DEFAULT_PASSPHRASE

    def env(self) -> dict[str, str]:
        return {
            **self.toolchain.env(),
            "PULUMI_BACKEND_URL": f"file://{self.backend_dir}",
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
        }

    def stack(self, name: str, work_dir: Path = PROJECT_ROOT, config: Mapping[str, Any] | None = None) -> auto.Stack:
        """Select (or create) stack `name` of the project in `work_dir`, then set `config` on it.

        Values are set as the CLI would set them: strings as they are, other scalars as JSON, lists and mappings
        leaf by leaf with `--path`; keys carry their namespace (`kubeadm-libvirt:nodes`, `libvirt:uri`).
        """
        self.backend_dir.mkdir(parents=True, exist_ok=True)
        workspace = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            env_vars=self.env(),
            pulumi_command=auto.PulumiCommand(root=str(self.toolchain.root), skip_version_check=True),
            secrets_provider="passphrase",
        )
        stack = auto.create_or_select_stack(
            stack_name=name, project_name=project_name(work_dir), program=inline_program(work_dir), opts=workspace
        )
        for key, value in (config or {}).items():
            if isinstance(value, (dict, list)):
                # Structured values are written leaf by leaf (`pulumi config set --path`), so the stack file holds
                # them as YAML structure, as Pulumi.dev.yaml does: a later `config set --path 'nodes[2].name'`
                # then extends the list. Set as one JSON string, the list would be a string to --path.
                try:
                    stack.remove_config(key)
                except auto.CommandError:
                    pass  # not set yet
                for path, leaf in _leaves(key, value):
                    stack.set_config(path, config_value(leaf), path=True)
            else:
                stack.set_config(key, config_value(value))
        return stack


    def cli(self, work_dir: Path, *args: str, timeout: float = 600) -> str:
        """Run the CLI itself (for what needs no program: export, stack ls, config); its stdout."""
        done = subprocess.run(
            [str(self.toolchain.pulumi), *args], cwd=work_dir, env={**os.environ, **self.env()},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout


# A Go plugin's runtime answers SIGQUIT by printing every goroutine's stack on its stderr, then exiting; the engine
# shows a plugin's stderr among the operation's diagnostics, and fails the steps that were waiting on it.
DUMP_SECONDS = 30  # from a plugin's dump to the CLI's SIGINT, when the CLI has not ended by itself
CANCEL_SECONDS = 60  # from SIGINT to SIGKILL


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Bound an Automation API call. Past `seconds`, the Go resource plugins under the CLI this process started get
    SIGQUIT: a hung plugin prints where each goroutine waits (the CLI shows it with the operation's diagnostics) and
    exits, and the CLI fails the operation by itself, its history and lock written as for any failure. If the CLI is
    still running 30 s later it gets SIGINT (Pulumi's own graceful cancel), and a minute after that SIGKILL, with
    every process under it (plugins, their ssh). The call then fails with the CLI's error; a hang becomes a failure.
    A killed CLI leaves its stack locked: `release` removes the lock."""
    def interrupt() -> None:
        print(f"lab engine: {what} still running after {seconds:.0f} s: dumping and ending its Go plugins", file=sys.stderr)
        for pid in _own_cli_pids():
            for plugin in _go_plugins(pid):
                _signal(plugin, signal.SIGQUIT)
        if _wait_for_no_cli(DUMP_SECONDS):
            return
        print(f"lab engine: {what} still running: interrupting the Pulumi CLI", file=sys.stderr)
        for pid in _own_cli_pids():
            _signal(pid, signal.SIGINT)
        if _wait_for_no_cli(CANCEL_SECONDS):
            return
        for pid in _own_cli_pids():
            for process in [pid, *_descendants(pid)]:
                _signal(process, signal.SIGKILL)

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# What `pulumi refresh` leaves out (`--exclude`), here and in the README: the cloud-init disks. Their Read downloads
# the ISO as a libvirt stream, and go-libvirt (every commit to 2026-10 at least) can hang a whole connection there:
# it ends a download at an empty data packet and deregisters the call, and when libvirtd's next packet for that call
# arrives, the connection's only reader blocks handing it to the gone caller while holding the lock the caller needs
# (upstream digitalocean/go-libvirt#241 describes the same lock). Reproduced here outside Pulumi with the plugin's
# go-libvirt: one download in 10-100 hangs. A refresh of a stack with three ISOs hung once in CI; without the ISOs
# it downloads nothing. What is lost: drift of an ISO, which only a volume deleted by hand would cause.
REFRESH_EXCLUDES = ("**CloudInitDisk**",)


def _wait_for_no_cli(seconds: float) -> bool:
    """True once no CLI of this process runs, within `seconds`."""
    end = time.monotonic() + seconds
    while _own_cli_pids():
        if time.monotonic() > end:
            return False
        time.sleep(1)
    return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _go_plugins(cli_pid: int) -> list[int]:
    """The resource plugins under `cli_pid` that are Go binaries (the lab's Python stand-ins are not: SIGQUIT would
    only kill them without a word)."""
    plugins = []
    for pid in _descendants(cli_pid):
        try:
            executable = Path(os.readlink(f"/proc/{pid}/exe")).name
        except OSError:
            continue
        if executable.startswith("pulumi-resource-"):
            plugins.append(pid)
    return plugins


def release(stack: auto.Stack) -> None:
    """Remove the lock a killed CLI left on `stack` (`pulumi cancel`; the file backend deletes its lock files).
    Harmless when the stack is not locked."""
    try:
        stack.cancel()
    except auto.CommandError as error:
        print(f"lab engine: pulumi cancel: {str(error).strip()[-300:]}", file=sys.stderr)


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    children = []
    for task in tasks:
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _descendants(pid: int) -> list[int]:
    found, pending = [], _children(pid)
    while pending:
        child = pending.pop()
        found.append(child)
        pending += _children(child)
    return found


def _own_cli_pids() -> list[int]:
    """Pids of `pulumi` processes that are children of this process (never anyone else's)."""
    pids = []
    for child in _children(os.getpid()):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "pulumi":
                pids.append(child)
        except OSError:
            continue
    return pids


def copy_project(destination: Path) -> Path:
    """A copy of the project for the CLI to work in: `set_config` then never writes into the clone's stack files."""
    project = destination / "project"
    ignored = shutil.ignore_patterns(".git", ".cache", "venv", ".venv*", "__pycache__", "lab", "tests", "bench")
    shutil.copytree(PROJECT_ROOT, project, ignore=ignored)
    return project


def inline_program(work_dir: Path) -> Callable[[], None]:
    """The project's `__main__.py`, run as the Python language host runs it (its directory first on sys.path)."""
    main = Path(work_dir) / "__main__.py"

    def program() -> None:
        if str(work_dir) not in sys.path:
            sys.path.insert(0, str(work_dir))
        runpy.run_path(str(main), run_name="__main__")

    return program


def _leaves(path: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(f"{path}.{key}", item)]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(f"{path}[{index}]", item)]
    return [(path, value)]


def config_value(value: Any) -> auto.ConfigValue:
    if isinstance(value, auto.ConfigValue):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return auto.ConfigValue(value=text)
