"""End to end with the Pulumi CLI (Automation API): up, outputs, an empty second preview, destroy.

Needs what a user's host has and this machine does not: the Pulumi CLI, its provider plugins, mkisofs and a
libvirt daemon that can run KVM guests with internet access. It runs only when KUBEADM_LIBVIRT_E2E=1 and the
`pulumi` command exists, against a temporary copy of the project, a local file backend and its own stack, and
always destroys what it created.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from components.project_files import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None or os.environ.get("KUBEADM_LIBVIRT_E2E") != "1",
    reason="end-to-end run: needs the Pulumi CLI, a libvirt/KVM host and KUBEADM_LIBVIRT_E2E=1",
)


def test_up_gives_a_ready_cluster_and_a_second_preview_changes_nothing(tmp_path: Path) -> None:
    from pulumi import automation as auto

    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT, project, ignore=shutil.ignore_patterns(".git", ".cache", "venv", ".venv*", "__pycache__"))
    env = {"PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}", "PULUMI_CONFIG_PASSPHRASE": "e2e"}
    (tmp_path / "state").mkdir()
    stack = auto.create_or_select_stack(
        stack_name="e2e",
        work_dir=str(project),
        opts=auto.LocalWorkspaceOptions(env_vars=env, secrets_provider="passphrase"),
    )
    # The dev topology on its own network, so it can run beside a dev stack on the same host.
    stack.set_config("kubeadm-libvirt:network", auto.ConfigValue('{"name": "kubeadm-e2e", "cidr": "192.168.142.0/24"}'))
    stack.set_config(
        "kubeadm-libvirt:nodes",
        auto.ConfigValue(
            '[{"name": "e2e-master", "role": "control-plane", "ip": "192.168.142.130"},'
            ' {"name": "e2e-slave1", "role": "worker", "ip": "192.168.142.131"}]'
        ),
    )
    try:
        result = stack.up(on_output=print)
        outputs = result.outputs
        assert outputs["kubeconfig"].secret and "server: https://192.168.142.130:6443" in outputs["kubeconfig"].value
        assert outputs["joinCommand"].secret and outputs["joinCommand"].value.startswith("kubeadm join ")
        assert outputs["controlPlaneEndpoint"].value == "https://192.168.142.130:6443"
        # No perpetual diff (e.g. from NIC addresses or a changing cloud-init rendering).
        stack.preview(expect_no_changes=True, on_output=print)
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack("e2e")
