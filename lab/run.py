"""`python3 -m lab up` and friends: one Pulumi operation of a stack, for real, on a lab host.

The configuration is validated first, before anything is built or started. Then the toolchain and the guest image
are built if they are missing, the host is started if it is not running, and this process joins the host's network
namespace before the CLI starts (lab/netns.py says why). State goes to a file backend in the lab cache, so a stack
outlives the clone that made it, as a user's `file://~` state does.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from typing import Any

from pulumi import automation as auto

from components.config import ClusterConfig
from components.project_files import merged_config
from components.validation import NAMESPACE, ConfigError, RawConfig, parse_cluster_config
from lab import host, mirror_services, netns
from lab.calico import ensure_calico
from lab.engine import REFRESH_EXCLUDES, Engine, copy_project, deadline
from lab.errors import LabError
from lab.image import build_guest_image
from lab.paths import cache_root
from lab.mirror import ensure_mirror
from lab.mirror_services import MirrorEndpoints
from lab.stacks import LAB_GATEWAY, lab_stack_config, mirrored_cluster_config
from lab.toolchain import ensure_toolchain, load_pins

# Generous bounds for TCG on two cores; past them the CLI is interrupted and the command fails.
OPERATION_SECONDS = {"preview": 10 * 60, "up": 60 * 60, "refresh": 10 * 60, "destroy": 20 * 60}
# Stands in for the image path until the image is built: it passes the imageUrl rules, so validation can run first.
_PLACEHOLDER_IMAGE = "https://lab.invalid/disk.qcow2"


def validate(stack: str, config: Mapping[str, Any]) -> ClusterConfig:
    """The stack's configuration as the program will see it (Pulumi.yaml's defaults, the stack file, then `config`);
    LabError listing every problem, as the program would, before anything happens."""
    try:
        merged = merged_config(stack, overrides=config)
    except ValueError as error:
        raise LabError(f"cannot read the stack config: {error}") from None
    prefix = f"{NAMESPACE}:"
    values = {key[len(prefix) :]: value for key, value in merged.items() if key.startswith(prefix)}
    try:
        return parse_cluster_config(RawConfig(values=values))
    except ConfigError as error:
        raise LabError(str(error)) from None


def run_operation(operation: str, stack: str, host_name: str, overrides: Mapping[str, Any], mirrored: bool = False) -> int:
    """`mirrored`: the stack installs everything from the lab mirror (lab/mirror.py), served in the host's namespace."""
    settings = {f"{NAMESPACE}:{key}" if ":" not in key else key: value for key, value in overrides.items()}
    endpoints = MirrorEndpoints(LAB_GATEWAY)
    pins = load_pins()
    mirror_settings = mirrored_cluster_config(endpoints, pins["mirror"]["kubernetes"]["version"], pins["calico"]["version"]) if mirrored else {}
    validate(stack, {**lab_stack_config("qemu:///system", _PLACEHOLDER_IMAGE), **mirror_settings, **settings})
    toolchain = ensure_toolchain()
    image = build_guest_image()
    # Built before the namespace is joined: the builds download Go modules and Debian packages, the namespace has
    # no route out.
    mirror = ensure_mirror() if mirrored else None
    calico = ensure_calico() if mirrored else None
    lab_host = host.start(host_name)
    netns.join(lab_host.namespace)
    if mirror is not None:
        mirror_services.start(lab_host, mirror, calico)
    engine = Engine(toolchain=toolchain, backend_dir=cache_root() / "state")
    # The CLI works in a fresh copy of the project: setting the lab's config never writes Pulumi.<stack>.yaml into
    # the clone. The stack's config is whole on every run (the lab's, then --set), so nothing is lost with the copy.
    work_dir = cache_root() / "projects" / stack
    shutil.rmtree(work_dir, ignore_errors=True)
    selected = engine.stack(stack, copy_project(work_dir), config={**lab_stack_config(lab_host.uri, image), **mirror_settings, **settings})
    calls = {
        "preview": lambda: selected.preview(diff=True, on_output=print),
        # --continue-on-error: every step that does not wait on a failed one still runs.
        "up": lambda: selected.up(on_output=print, continue_on_error=True),
        "refresh": lambda: selected.refresh(on_output=print, exclude=list(REFRESH_EXCLUDES)),
        "destroy": lambda: selected.destroy(on_output=print),
    }
    try:
        with deadline(OPERATION_SECONDS[operation], f"pulumi {operation}"):
            calls[operation]()
    except auto.CommandError:
        # The CLI already printed the failure through on_output; the Automation API's repr would repeat it.
        print(f"lab: pulumi {operation} of stack {stack} failed (see above)", file=sys.stderr)
        return 1
    return 0
