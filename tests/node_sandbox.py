"""Running a step's script on this machine against fakes: the text the stack sends, with the node paths it reads and
writes moved under a sandbox directory, so the script's own parsing and file handling run for real and nothing on
this machine changes."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from components.plan import split_invocation

# Node paths -> where they go under the sandbox.
NODE_PATHS = (("/etc/kubernetes", "etc/kubernetes"), ("/etc/cni/net.d", "etc/cni/net.d"), ("/root/.kube", "root/.kube"), ("/var/log/kubeadm-libvirt", "log"))


def sandboxed(create: str, root: Path) -> tuple[str, dict[str, str], str]:
    """(step, env, script) of a one-script `create` command, its node paths moved under `root`."""
    ((step, env, script),) = split_invocation(create)
    for path, moved in NODE_PATHS:
        script = script.replace(path, f"{root}/{moved}")
    return step, env, script


def install_fakes(bin_dir: Path, fakes: Mapping[str, str]) -> None:
    """Each fake (name -> script text) as an executable in `bin_dir`, which the caller puts first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def run_sandboxed(
    create: str, root: Path, bin_dir: Path, env: Mapping[str, str], stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A step's `create` command run here as the node would (`bash -c SCRIPT step`), its node paths under `root`,
    the fakes in `bin_dir` first on PATH, the step's own env plus `env`."""
    step, step_env, script = sandboxed(create, root)
    return subprocess.run(
        ["bash", "-c", script, step],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**step_env, **env, "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
