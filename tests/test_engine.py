"""The real Pulumi engine against the lab's libvirt: preview, up, a resumed up, refresh and destroy.

What runs for real: the Pulumi CLI and engine (built from Go modules), the libvirt plugin (terraform-provider-libvirt
behind the bridge), libvirtd and QEMU (TCG) in the lab host's network namespace, the Debian 12 guest image booting
the stack's own seeds, and the stack's node scripts over SSH. What stands in: the `command` and `tls` plugins
(lab/plugins: their Go modules are refused by the module proxy), and the language host (the Automation API serves
the real __main__.py in-process). No package source is reachable from the lab, so the stack stops at its first
download, the container runtime; the tests check that it stops there clearly and resumes there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pulumi import automation as auto

from components.mockrun import run_program
from tests.test_scaling import compare
from lab import host, netns
from lab.engine import Engine, copy_project, deadline
from lab.errors import LabError
from lab.image import build_guest_image
from lab.stacks import LAB_NODES, lab_stack_config
from lab.toolchain import Toolchain, ensure_toolchain

pytestmark = pytest.mark.engine

# One host per test process: two suites running at once (two sessions, or CI beside a developer) never share one.
HOST_NAME = f"engine-{os.getpid()}"
PREPARED_STEPS = ("wait-for-boot", "cluster-hosts", "os-prep")
PROVIDER_OR_STACK = re.compile(r"^pulumi:(providers:|pulumi:Stack)")
PRIVATE_KEY_MARKERS = ("PRIVATE KEY-----", "BEGIN OPENSSH PRIVATE KEY")
# Bounds on each engine run here (TCG, 2 cores): an up takes about 2 minutes, a preview or destroy well under one.
# Past them the CLI is interrupted and the test fails, rather than CI hanging.
UP_SECONDS = 15 * 60
QUICK_SECONDS = 5 * 60


@dataclass(frozen=True)
class Lab:
    toolchain: Toolchain
    image: Path
    host: host.LabHost
    engine: Engine


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the engine tests need root (CI runs .ci/run as root)")
        pytest.skip("the engine tests need root: they start libvirtd in a network namespace")
    try:
        toolchain = ensure_toolchain()
        image = build_guest_image()
        lab_host = host.start(HOST_NAME)
    except LabError as error:
        pytest.fail(f"the lab could not start: {error}")
    try:
        # This process joins the namespace so the CLI it starts, and the plugins' SSH, run there (lab/netns.py).
        with netns.joined(lab_host.namespace):
            yield Lab(toolchain, image, lab_host, Engine(toolchain, backend_dir=tmp_path_factory.mktemp("state")))
    finally:
        host.stop(HOST_NAME)


def engine_events(stack_call, **kwargs) -> list[auto.EngineEvent]:
    events: list[auto.EngineEvent] = []
    stack_call(on_event=events.append, **kwargs)
    return events


def program_steps(events: list[auto.EngineEvent]) -> list[auto.StepEventMetadata]:
    """The engine's step for each of the program's resources (providers and the stack left out)."""
    return [
        event.resource_pre_event.metadata
        for event in events
        if event.resource_pre_event is not None and not PROVIDER_OR_STACK.match(event.resource_pre_event.metadata.type)
    ]


def steps_by_name(events: list[auto.EngineEvent]) -> dict[str, str]:
    """Resource name -> the step the engine took (create, same, update, replace, ...)."""
    return {step.urn.rsplit("::", 1)[1]: step.op.value for step in program_steps(events)}


# --- preview: the engine registers exactly what the mocks do ------------------------------------------------------


def test_preview_of_the_dev_stack_registers_what_the_mock_run_registers(lab: Lab, tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    stack = lab.engine.stack("dev", project, config={"libvirt:uri": lab.host.uri})
    output: list[str] = []
    with deadline(QUICK_SECONDS, "pulumi preview"):
        events = engine_events(stack.preview, on_output=output.append)
    seen = {step.urn: step.type for step in program_steps(events)}
    mocked = {r.urn: r.type for r in run_program("dev").registrations if not PROVIDER_OR_STACK.match(r.type)}
    assert set(seen) - set(mocked) == set() and set(mocked) - set(seen) == set()
    assert seen == mocked
    assert all(op == "create" for op in steps_by_name(events).values())
    text = "\n".join(output) + json.dumps([e.__dict__ for e in events], default=str)
    assert not any(marker in text for marker in PRIVATE_KEY_MARKERS)


def test_the_cli_refuses_a_project_whose_minimum_version_it_does_not_meet(lab: Lab, tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    settings = project / "Pulumi.yaml"
    text = settings.read_text()
    assert "requiredPulumiVersion:" in text
    settings.write_text(re.sub(r'requiredPulumiVersion: .*', 'requiredPulumiVersion: ">=99.0.0"', text))
    stack = lab.engine.stack("minimum", project, config={"libvirt:uri": lab.host.uri})
    with deadline(QUICK_SECONDS, "pulumi up (version check)"), pytest.raises(auto.CommandError, match="99.0.0"):
        stack.up(on_output=print, continue_on_error=True)
    assert state_resources(stack) == {}


# --- up: the VMs for real, the preparation steps over SSH, a clear stop at the first download ----------------------


@dataclass(frozen=True)
class UpRun:
    stack: auto.Stack
    error: str
    output: str


@pytest.fixture(scope="module")
def first_up(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> UpRun:
    project = copy_project(tmp_path_factory.mktemp("lab-stack"))
    stack = lab.engine.stack("lab", project, config=lab_stack_config(lab.host.uri, lab.image))
    output: list[str] = []
    # --continue-on-error: every step that does not wait on a failed one still runs, so what has run when the up
    # ends does not depend on which node booted first.
    try:
        with deadline(UP_SECONDS, "pulumi up"):
            stack.up(on_output=output.append, continue_on_error=True)
    except auto.CommandError as error:
        print("".join(output[-60:]))  # the engine's own account, for a reader of the test log
        return UpRun(stack, str(error), "\n".join(output))
    pytest.fail("pulumi up succeeded although no package source is reachable in the lab:\n" + "\n".join(output[-40:]))


def domain_xml(lab: Lab, name: str) -> ET.Element:
    return ET.fromstring(lab.host.virsh("dumpxml", name))


def volume_path(lab: Lab, source: ET.Element) -> str:
    """The file behind a disk's <source>: a path, or a pool volume as the provider attaches them."""
    if source.get("file"):
        return source.get("file")
    return lab.host.virsh("vol-path", "--pool", source.get("pool"), source.get("volume")).strip()


def state_resources(stack: auto.Stack) -> dict[str, dict]:
    deployment = stack.export_stack().deployment
    return {resource["urn"].rsplit("::", 1)[1]: resource for resource in deployment.get("resources", [])}


def test_up_creates_the_vms_as_the_stack_describes_them(lab: Lab, first_up: UpRun) -> None:
    resources = state_resources(first_up.stack)
    for node in LAB_NODES:
        name = node["name"]
        domain = resources[f"{name}-domain"]
        xml = domain_xml(lab, name)
        assert xml.get("type") == "qemu"  # accelerator tcg
        mac = xml.find("./devices/interface/mac").get("address")
        assert mac == domain["inputs"]["networkInterfaces"][0]["mac"]
        disks = {d.get("device"): d for d in xml.findall("./devices/disk")}
        root_volume = volume_path(lab, disks["disk"].find("./source"))
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", root_volume], capture_output=True, text=True, check=True).stdout)
        base_name = resources["kubeadm-libvirt-base-image"]["outputs"]["name"]
        assert info["format"] == "qcow2" and info["backing-filename"].endswith(base_name), info  # copy-on-write child
        assert volume_path(lab, disks["cdrom"].find("./source")).endswith(".iso")
        assert "Autostart:      enable" in lab.host.virsh("dominfo", name)
        # What the domain needs from libvirt and QEMU: VNC (not SPICE) on loopback, and an i440fx machine, since the
        # provider attaches the cloud-init ISO on IDE, which q35 does not have.
        graphics = xml.findall("./devices/graphics")
        assert [g.get("type") for g in graphics] == ["vnc"] and graphics[0].get("listen") == "127.0.0.1"
        assert disks["cdrom"].find("./target").get("bus") == "ide"
        assert xml.find("./os/type").get("machine").startswith("pc-i440fx")


def test_preparation_steps_ran_and_the_runtime_step_failed_naming_node_and_source(first_up: UpRun) -> None:
    resources = state_resources(first_up.stack)
    for node in LAB_NODES:
        for step in PREPARED_STEPS:
            assert f"{node['name']}-{step}" in resources, f"{node['name']}-{step} did not complete"
        assert f"{node['name']}-container-runtime" not in resources
    assert "container-runtime" in first_up.error
    assert re.search(r"lab-(cp|w1)-container-runtime", first_up.error), first_up.error[-2000:]
    assert "download.docker.com" in first_up.error, first_up.error[-2000:]


def test_a_second_preview_plans_only_the_failed_step_and_what_follows(first_up: UpRun) -> None:
    existing = set(state_resources(first_up.stack))
    with deadline(QUICK_SECONDS, "pulumi preview --diff"):
        steps = steps_by_name(engine_events(first_up.stack.preview, diff=True))
    changed = {name: op for name, op in steps.items() if op != "same"}
    assert changed, "nothing left to do after a failed up?"
    assert all(op == "create" and name not in existing for name, op in changed.items()), changed
    for node in LAB_NODES:
        assert f"{node['name']}-container-runtime" in changed
        for step in PREPARED_STEPS:
            assert steps[f"{node['name']}-{step}"] == "same"


def plain_text_secrets(value: object, path: str = "") -> list[str]:
    """Paths in an exported deployment where private key material appears unencrypted."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in plain_text_secrets(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in plain_text_secrets(item, f"{path}[{index}]")]
    return [path] if isinstance(value, str) and any(marker in value for marker in PRIVATE_KEY_MARKERS) else []


def test_state_holds_no_secret_in_plain_text(lab: Lab, first_up: UpRun) -> None:
    # `pulumi stack export` as a user runs it (the Automation API's export adds --show-secrets).
    work_dir = Path(first_up.stack.workspace.work_dir)
    deployment = json.loads(lab.engine.cli(work_dir, "stack", "export", "--stack", "lab"))["deployment"]
    leaks = [
        f"{resource['urn'].rsplit('::', 1)[1]}{path}"
        for resource in deployment.get("resources", [])
        for path in plain_text_secrets(resource)
    ]
    assert leaks == []
    assert "ciphertext" in json.dumps(deployment)
    for marker in PRIVATE_KEY_MARKERS:
        assert marker not in first_up.output


# --- change: a worker added with `pulumi config set --path`, a VM lost out of band ----------------------------------

NEW_WORKER = {"name": "lab-w2", "role": "worker", "ip": "192.168.150.12"}


def test_an_added_worker_changes_exactly_what_the_scaling_tests_predict(lab: Lab, first_up: UpRun) -> None:
    stack = first_up.stack
    before = run_program("lab", overrides=lab_stack_config(lab.host.uri, lab.image))
    for key, value in NEW_WORKER.items():
        stack.set_config(f"kubeadm-libvirt:nodes[{len(LAB_NODES)}].{key}", auto.ConfigValue(value), path=True)
    after = run_program("lab", overrides=lab_stack_config(lab.host.uri, lab.image, nodes=(*LAB_NODES, NEW_WORKER)))
    added, removed, changed = compare(before, after)  # what tests/test_scaling.py asserts on the dev stack
    assert added and removed == set()

    existing = set(state_resources(stack))
    with deadline(QUICK_SECONDS, "pulumi preview --diff"):
        planned = steps_by_name(engine_events(stack.preview, diff=True))
    touched = {name for name, op in planned.items() if op != "same" and name in existing}
    assert touched == changed & existing  # the existing nodes' hosts files, nothing else that exists
    created = {name for name, op in planned.items() if op == "create"}
    assert added <= created and created - added == set(planned) - existing - added  # the rest: steps not yet run

    with deadline(UP_SECONDS, "pulumi up (added worker)"):
        with pytest.raises(auto.CommandError, match="lab-w2-container-runtime"):
            stack.up(on_output=print, continue_on_error=True)
    resources = state_resources(stack)
    for step in ("domain", *PREPARED_STEPS):
        assert f"lab-w2-{step}" in resources
    assert lab.host.virsh("domstate", "lab-w2").strip() == "running"


def test_a_vm_destroyed_out_of_band_comes_back_with_its_address_and_host_key(lab: Lab, first_up: UpRun) -> None:
    stack = first_up.stack
    name, ip = LAB_NODES[1]["name"], LAB_NODES[1]["ip"]
    pinned = state_resources(stack)[name]["outputs"]["hostPublicKey"]
    mac = domain_xml(lab, name).find("./devices/interface/mac").get("address")
    lab.host.virsh("destroy", name)
    lab.host.virsh("undefine", name)

    with deadline(QUICK_SECONDS, "pulumi refresh"):
        stack.refresh(on_output=print)
    assert f"{name}-domain" not in state_resources(stack)
    with deadline(UP_SECONDS, "pulumi up (recreate)"):
        with pytest.raises(auto.CommandError, match="container-runtime"):
            stack.up(on_output=print, continue_on_error=True)
    resources = state_resources(stack)
    assert f"{name}-domain" in resources and f"{name}-os-prep" in resources
    assert domain_xml(lab, name).find("./devices/interface/mac").get("address") == mac
    # The recreated VM answers at the same address with the key the stack pinned (the steps above dialled it).
    scanned = subprocess.run(["ssh-keyscan", "-T", "30", "-t", "ed25519", ip], capture_output=True, text=True, timeout=90)
    offered = {" ".join(line.split()[1:3]) for line in scanned.stdout.splitlines() if line and not line.startswith("#")}
    assert offered == {" ".join(pinned.split()[:2])}


def test_destroy_leaves_nothing_in_libvirt(lab: Lab, first_up: UpRun) -> None:
    with deadline(QUICK_SECONDS * 2, "pulumi destroy"):
        first_up.stack.destroy(on_output=print)
    assert lab.host.virsh("list", "--all", "--name").strip() == ""
    assert "kvl-lab" not in lab.host.virsh("net-list", "--all", "--name")
    assert lab.host.virsh("vol-list", "default").strip() == ""
    assert state_resources(first_up.stack) == {}
