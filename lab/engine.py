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


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Bound an Automation API call: past `seconds`, the CLI this process started gets SIGINT (Pulumi's own graceful
    cancel), and a minute later SIGKILL, with every process under it (plugins, their ssh). The call then fails with
    the CLI's error; a hang becomes a failure. A killed CLI leaves its stack locked: `release` removes the lock."""
    def interrupt() -> None:
        print(f"lab engine: {what} still running after {seconds:.0f} s: interrupting the Pulumi CLI", file=sys.stderr)
        for pid in _own_cli_pids():
            os.kill(pid, signal.SIGINT)
        time.sleep(60)
        for pid in _own_cli_pids():
            for process in [pid, *_descendants(pid)]:
                try:
                    os.kill(process, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


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
