"""Running a step's script on this machine against fakes: the text the stack sends, with the node paths it reads and
writes moved under a sandbox directory, so the script's own parsing and file handling run for real and nothing on
this machine changes."""

from __future__ import annotations

from pathlib import Path

from components.plan import split_invocation

# Node paths -> where they go under the sandbox.
NODE_PATHS = (("/etc/kubernetes", "etc/kubernetes"), ("/var/log/kubeadm-libvirt", "log"))


def sandboxed(create: str, root: Path) -> tuple[str, dict[str, str], str]:
    """(step, env, script) of a one-script `create` command, its node paths moved under `root`."""
    ((step, env, script),) = split_invocation(create)
    for path, moved in NODE_PATHS:
        script = script.replace(path, f"{root}/{moved}")
    return step, env, script
