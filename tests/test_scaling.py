"""Change without surprises: comparing the mock-rendered inputs of two configurations, the resources that
differ are exactly the ones the change is about."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from components import steps
from components.join_token import join_token_id
from components.mockrun import StackRun, run_program
from components.plan import split_invocation

MASTER = {"name": "kubernetes-master", "role": "control-plane", "ip": "192.168.141.130"}
SLAVE1 = {"name": "kubernetes-slave1", "role": "worker", "ip": "192.168.141.131"}
SLAVE2 = {"name": "kubernetes-slave2", "role": "worker", "ip": "192.168.141.132"}
SLAVE3 = {"name": "kubernetes-slave3", "role": "worker", "ip": "192.168.141.133"}
NODE_STEPS = ("wait-for-boot", "cluster-hosts", "os-prep", "container-runtime", "kube-packages")


def inputs_by_name(run: StackRun) -> dict[str, str]:
    return {r.name: json.dumps(r.inputs, sort_keys=True) for r in run.registrations}


def compare(before: StackRun, after: StackRun) -> tuple[set[str], set[str], set[str]]:
    """(added, removed, changed) resource names."""
    old, new = inputs_by_name(before), inputs_by_name(after)
    changed = {name for name in old.keys() & new.keys() if old[name] != new[name]}
    return new.keys() - old.keys(), old.keys() - new.keys(), changed


def worker_resources(worker: str, control_plane: str = MASTER["name"]) -> set[str]:
    """Everything one worker brings: its VM, its own steps, and its three steps on the control plane (its token
    minted, its token deleted once it has joined, its membership). Also what tests/test_cluster.py expects of the
    real engine when it adds and removes a lab worker."""
    vm = {worker, f"{worker}-host-key", f"{worker}-disk", f"{worker}-cloudinit", f"{worker}-domain"}
    own = {f"{worker}-{step}" for step in (*NODE_STEPS, "prepull-images", "kubeadm-join")}
    on_control_plane = {f"{control_plane}-{worker}-{step}" for step in ("join-command", "join-token-cleanup", "membership")}
    return vm | own | on_control_plane


# Cluster-wide checks list every node, and every node's /etc/hosts block lists every node: these re-run.
def cluster_wide(existing: list[dict], control_plane: str = MASTER["name"]) -> set[str]:
    return {f"{node['name']}-cluster-hosts" for node in existing} | {
        f"{control_plane}-cluster-ready", f"{control_plane}-smoke-test"
    }  # fmt: skip


def test_adding_a_worker_runs_only_its_steps_and_its_own_token() -> None:
    before = run_program("dev", overrides={"nodes": [MASTER, SLAVE1, SLAVE2]})
    after = run_program("dev", overrides={"nodes": [MASTER, SLAVE1, SLAVE2, SLAVE3]})
    added, removed, changed = compare(before, after)
    assert added == worker_resources("kubernetes-slave3")
    assert removed == set()
    assert changed == cluster_wide([MASTER, SLAVE1, SLAVE2])
    # Its own token, under an id of its own: the other workers' token steps are untouched (not in `changed`).
    ((step, env, _),) = split_invocation(after.named("kubernetes-master-kubernetes-slave3-join-command").input("create"))
    assert (step, env["TOKEN_ACTION"], env["TOKEN_ID"]) == ("join-token", "mint", join_token_id("kubernetes-slave3"))
    assert env["TOKEN_ID"] not in {join_token_id(worker["name"]) for worker in (SLAVE1, SLAVE2)}


def test_removing_a_worker_drains_deletes_and_resets_only_it() -> None:
    before = run_program("dev", overrides={"nodes": [MASTER, SLAVE1, SLAVE2]})
    after = run_program("dev", overrides={"nodes": [MASTER, SLAVE1]})
    added, removed, changed = compare(before, after)
    assert added == set()
    assert removed == worker_resources("kubernetes-slave2")
    assert changed == cluster_wide([MASTER, SLAVE1])
    # What the removal runs: the drain through the control plane, and the reset on the worker (skipped by the
    # engine when the worker's VM is deleted in the same run, since deleted_with names it).
    membership = before.named("kubernetes-master-kubernetes-slave2-membership")
    assert "drain-node" in membership.input("delete") and "kubernetes-slave2" in membership.input("delete")
    join = before.named("kubernetes-slave2-kubeadm-join")
    assert "reset-node" in join.input("delete") and join.deleted_with.endswith("::kubernetes-slave2-domain")
    # And its token, should it still exist (a worker removed before it joined): deleted by its id, no secret needed.
    ((_, env, _),) = split_invocation(before.named("kubernetes-master-kubernetes-slave2-join-command").input("delete"))
    assert (env["TOKEN_ACTION"], env["TOKEN_ID"]) == ("delete-if-reachable", join_token_id("kubernetes-slave2"))


@pytest.fixture
def edited_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of components/scripts the test may edit, used by the program in place of the real one."""
    copy = tmp_path / "scripts"
    shutil.copytree(steps.SCRIPT_DIR, copy)
    monkeypatch.setattr(steps, "SCRIPT_DIR", copy)
    steps.script_text.cache_clear()
    yield copy
    steps.script_text.cache_clear()


def test_changing_a_script_reruns_only_the_steps_that_use_it(edited_scripts: Path) -> None:
    before = run_program("dev")
    script = edited_scripts / "os-prep.sh"
    script.write_text(script.read_text() + "\n# an edit\n")
    steps.script_text.cache_clear()
    after = run_program("dev")
    added, removed, changed = compare(before, after)
    assert (added, removed) == (set(), set())
    assert changed == {f"{node}-os-prep" for node in ("kubernetes-master", "kubernetes-slave1", "kubernetes-slave2")}
    # An edit is an update (create runs again on the same VM), not a replacement: triggers are unchanged.
    assert {after.named(name).input("triggers") == before.named(name).input("triggers") for name in changed} == {True}


def test_changing_the_shared_library_reruns_every_script_step(edited_scripts: Path) -> None:
    before = run_program("dev")
    library = edited_scripts / "lib" / "common.sh"
    library.write_text(library.read_text() + "\n# an edit\n")
    steps.script_text.cache_clear()
    _, _, changed = compare(before, run_program("dev"))
    scripted = {r.name for r in before.of_type("command:remote:Command") if "bash -c" in r.input("create")}
    assert changed == scripted


def test_changing_the_pod_subnet_touches_the_control_plane_steps_only() -> None:
    _, _, changed = compare(run_program("dev"), run_program("dev", overrides={"podSubnet": "10.200.0.0/16"}))
    assert changed == {"kubernetes-master-kubeadm-init", "kubernetes-master-calico"}


# --- timeoutScale: every bound the program sets or passes on is multiplied -----------------------

DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def go_seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert match and duration, f"not a Go duration: {duration!r}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def bounds(run) -> dict[str, int]:
    """Every bound of a run, by a stable name: Pulumi custom timeouts, SSH dial limits, the scripts' *_TIMEOUT_SECONDS
    inputs and scale, and kubeadm's own timeouts (init and join configurations)."""
    found: dict[str, int] = {}
    for resource in run.registrations:
        for phase, duration in resource.custom_timeouts.items():
            found[f"{resource.name} customTimeouts.{phase}"] = go_seconds(duration)
        if resource.type != "command:remote:Command":
            continue
        connection = resource.input("connection")
        found[f"{resource.name} dialErrorLimit"] = connection["dialErrorLimit"]
        found[f"{resource.name} perDialTimeout"] = connection["perDialTimeout"]
        for hook in ("create", "delete"):
            if not resource.input(hook) or "bash -c" not in resource.input(hook):
                continue
            for step, env, _ in split_invocation(resource.input(hook)):
                for key, value in env.items():
                    if key.endswith("_TIMEOUT_SECONDS") or key == "TIMEOUT_SCALE_PERCENT":
                        found[f"{resource.name} {hook} {step} {key}"] = int(value)
                for key in ("KUBEADM_CONFIG", "JOIN_CONFIGURATION"):
                    for document in yaml.safe_load_all(env.get(key, "")):
                        for field, duration in ((document or {}).get("timeouts") or {}).items():
                            found[f"{resource.name} {key} {document['kind']}.timeouts.{field}"] = go_seconds(duration)
    return found


def test_timeout_scale_multiplies_every_bound() -> None:
    base, tripled = bounds(run_program("dev")), bounds(run_program("dev", overrides={"timeoutScale": "3"}))
    assert base.keys() == tripled.keys()
    assert {name: value * 3 for name, value in base.items()} == tripled
    # Every kind of bound is there: otherwise the comparison above would prove little.
    kinds = {name.split(" ")[-1].split(".")[0] for name in base}
    assert {"customTimeouts", "dialErrorLimit", "perDialTimeout", "TIMEOUT_SCALE_PERCENT", "BOOT_TIMEOUT_SECONDS",
            "APT_LOCK_TIMEOUT_SECONDS", "RUNTIME_READY_TIMEOUT_SECONDS", "INIT_TIMEOUT_SECONDS", "API_WAIT_TIMEOUT_SECONDS",
            "CALICO_TIMEOUT_SECONDS", "PULL_TIMEOUT_SECONDS", "JOIN_TIMEOUT_SECONDS", "READY_TIMEOUT_SECONDS",
            "RESET_TIMEOUT_SECONDS", "DRAIN_TIMEOUT_SECONDS", "SMOKE_TIMEOUT_SECONDS"} <= kinds  # fmt: skip
    kubeadm = {name.rsplit(".", 1)[-1] for name in base if ".timeouts." in name}
    assert kubeadm == {"controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall", "etcdAPICall",
                       "discovery", "tlsBootstrap"}  # fmt: skip
    assert all(value == 100 for name, value in base.items() if name.endswith("TIMEOUT_SCALE_PERCENT"))


def test_a_fractional_scale_rounds_every_bound_up() -> None:
    base, scaled = bounds(run_program("dev")), bounds(run_program("dev", overrides={"timeoutScale": "1.33"}))
    for name, value in base.items():
        expected = 133 if name.endswith("TIMEOUT_SCALE_PERCENT") else -(-value * 133 // 100)
        assert scaled[name] == expected, name


@pytest.mark.parametrize("scale", ["1", "4"])
def test_every_script_bound_ends_before_the_engine_kills_its_step(scale: str) -> None:
    """A slow step must end with its script's own timeout message, never be cut off by Pulumi's custom timeout."""
    run = run_program("dev", overrides={"timeoutScale": scale, "accelerator": "tcg"})
    for step in run.of_type("command:remote:Command"):
        for hook, phase in (("create", "create"), ("delete", "delete")):
            if not step.input(hook) or "bash -c" not in step.input(hook):
                continue
            limit = go_seconds(step.custom_timeouts[phase])
            for script, env, _ in split_invocation(step.input(hook)):
                waits = {key: int(value) for key, value in env.items() if key.endswith("_TIMEOUT_SECONDS")}
                assert sum(waits.values()) < limit, (step.name, script, waits, limit)
