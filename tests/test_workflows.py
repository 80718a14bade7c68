"""GitHub workflows: valid against the workflow schema, and doing what the README says they do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_matches_the_github_schema(path: Path) -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is missing: pip install -r requirements.txt"
    result = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    runs-onn: ubuntu-latest\n")
    result = subprocess.run([shutil.which("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)], capture_output=True)
    assert result.returncode != 0


def test_test_workflow_runs_the_ci_script_on_every_push_and_pr() -> None:
    workflow = yaml.safe_load((WORKFLOWS[0].parent / "test.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the `on` key as True
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in runs


def test_preview_workflow_comments_a_diff_with_secrets_from_the_repository() -> None:
    workflow = yaml.safe_load((WORKFLOWS[0].parent / "preview.yml").read_text())
    job = workflow["jobs"]["preview"]
    (pulumi_step,) = [step for step in job["steps"] if str(step.get("uses", "")).startswith("pulumi/actions@")]
    assert pulumi_step["with"]["command"] == "preview" and pulumi_step["with"]["diff"] is True
    assert pulumi_step["with"]["comment-on-pr"] is True
    assert pulumi_step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    installs = [step for step in job["steps"] if "pip install -r requirements.txt" in step.get("run", "")]
    assert installs and job["steps"].index(installs[0]) < job["steps"].index(pulumi_step)
    assert "head.repo.full_name == github.repository" in job["if"]  # fork PRs never reach the self-hosted runner
