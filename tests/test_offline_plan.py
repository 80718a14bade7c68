"""The offline plan: a stable text of the whole stack that reviewers diff, kept as a golden file."""

from __future__ import annotations

import difflib
import subprocess
import sys

from components.mockrun import run_program
from components.plan import render_plan
from components.project_files import PROJECT_ROOT
from tests.golden import assert_matches_golden


def test_dev_plan_matches_the_committed_golden_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "components.plan", "--stack", "dev"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert_matches_golden("plan-dev.txt", result.stdout)


def test_plan_is_stable_and_hides_secrets(key_pair) -> None:
    run = run_program("dev", overrides={"sshPublicKey": key_pair.public_key, "sshPrivateKey": key_pair.private_key}, secret_keys=["sshPrivateKey"])
    plan = render_plan(run, "dev")
    assert plan == render_plan(run_program("dev", overrides={"sshPublicKey": key_pair.public_key, "sshPrivateKey": key_pair.private_key}, secret_keys=["sshPrivateKey"]), "dev")
    assert key_pair.private_key.splitlines()[1] not in plan
    assert "kubeconfig: [secret]" in plan and "joinCommand: [secret]" in plan
    assert "connection: \"[secret]\"" in plan and "stdin: \"[secret]\"" in plan


def test_kubernetes_level_changes_read_as_plain_diffs() -> None:
    before = render_plan(run_program("dev"), "dev").splitlines()
    after = render_plan(run_program("dev", overrides={"podSubnet": "10.200.0.0/16"}), "dev").splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed and all("10.200.0.0/16" in line or "10.244.0.0/16" in line for line in changed), changed


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.plan", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )


def test_bad_input_prints_the_configuration_error_alone_and_exits_2() -> None:
    result = run_plan("--set", "vcpus=1", "--set", "timeoutScale=0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "Invalid kubeadm-libvirt configuration (2 problems)" in result.stderr
    assert "vcpus: 1 is below 2" in result.stderr and "timeoutScale: '0' is below 1" in result.stderr


def test_command_line_mistakes_exit_2_without_a_traceback() -> None:
    cases = {
        ("--set", "vcpu=4"): "--set vcpu: not a config key of this project",
        ("--set", "vcpus"): "expected KEY=VALUE",
        ("--set", "nodes=[{name: x"): "--set nodes: the value is not valid YAML",
        ("--stack", "nosuchstack"): "there is no Pulumi.nosuchstack.yaml",
        ("--bogus",): "unrecognized arguments: --bogus",
    }
    for args, message in cases.items():
        result = run_plan(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
