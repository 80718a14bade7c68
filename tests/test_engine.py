"""The real Pulumi engine against the lab's libvirt: preview, up, a resumed up, refresh and destroy.

What runs for real: the Pulumi CLI and engine (built from Go modules), the libvirt plugin (terraform-provider-libvirt
behind the bridge), libvirtd and QEMU (TCG) in the lab host's network namespace, the Debian 12 guest image booting
the stack's own seeds, and the stack's node scripts over SSH. What stands in: the `command` and `tls` plugins
(lab/plugins: their Go modules are refused by the module proxy), and the language host (the Automation API serves
the real __main__.py in-process). No package source is reachable from the lab, so the stack stops at its first
download, the container runtime; the tests check that it stops there clearly and resumes there. On the VMs that first
up made they also check what a real node must show (seeds, host keys, idempotent steps, a reboot): the project's one
VM lab, which replaced the QEMU user-mode harness of tests/realvm.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from components.mockrun import StackRun, run_program
from components.plan import split_invocation
from components.steps import command_line
from lab.engine import copy_project, deadline
from lab.stacks import LAB_NODES, lab_stack_config
from tests.lab_nodes import NodeShell, change_lines, node_shells, revealed
from tests.lab_session import Lab, LabSession, state_resources
from tests.test_scaling import compare

pytestmark = pytest.mark.engine

PREPARED_STEPS = ("wait-for-boot", "cluster-hosts", "os-prep")
PROVIDER_OR_STACK = re.compile(r"^pulumi:(providers:|pulumi:Stack)")
PRIVATE_KEY_MARKERS = ("PRIVATE KEY-----", "BEGIN OPENSSH PRIVATE KEY")
# Bounds on each engine run here (TCG, 2 cores): an up takes about 2 minutes, a preview or destroy well under one.
# Past them the CLI is interrupted and the test fails, rather than CI hanging.
UP_SECONDS = 15 * 60
QUICK_SECONDS = 5 * 60
REFRESH_SECONDS = 2 * 60  # a refresh of the lab stack takes 1-2 s; past this it hangs (lab.bounded_refresh)


@pytest.fixture(scope="module")
def lab(lab_session: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return lab_session.module_lab(tmp_path_factory.mktemp("state"))


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
def first_up(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpRun]:
    project = copy_project(tmp_path_factory.mktemp("lab-stack"))
    stack = lab.engine.stack("lab", project, config=lab_stack_config(lab.host.uri, lab.image))
    output: list[str] = []
    # --continue-on-error: every step that does not wait on a failed one still runs, so what has run when the up
    # ends does not depend on which node booted first.
    error = lab.bounded_up(stack, UP_SECONDS, output)
    if not error:
        lab.leave_empty(stack, QUICK_SECONDS * 2)
        pytest.fail("pulumi up succeeded although no package source is reachable in the lab:\n" + "\n".join(output[-40:]))
    print("".join(output[-60:]))  # the engine's own account, for a reader of the test log
    yield UpRun(stack, error, "\n".join(output))
    lab.leave_empty(stack, QUICK_SECONDS * 2)  # also when a test failed before the destroy test


def domain_xml(lab: Lab, name: str) -> ET.Element:
    return ET.fromstring(lab.host.virsh("dumpxml", name))


def volume_path(lab: Lab, source: ET.Element) -> str:
    """The file behind a disk's <source>: a path, or a pool volume as the provider attaches them."""
    if source.get("file"):
        return source.get("file")
    return lab.host.virsh("vol-path", "--pool", source.get("pool"), source.get("volume")).strip()


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


def test_each_vm_console_is_recorded_from_its_first_boot(lab: Lab, first_up: UpRun) -> None:
    # lab/consoles.py: what the failure messages quote for a VM that never answers. From the kernel's first lines
    # (attached within POLL_SECONDS of the domain starting) to cloud-init's end, with the hostname the seed set.
    for node in LAB_NODES:
        console = lab.consoles.last_run(node["name"])
        assert "Linux version" in console, console[-2000:]
        assert re.search(r"Cloud-init v\. \S+ finished", console), console[-2000:]
        assert f"{node['name']} login:" in console, console[-2000:]


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


# --- the nodes the first up made, on the guest: what the seeds and the steps promise --------------------------------
# Dialled from inside the lab namespace as the steps dial them: the connection (user, the stack's key, the pinned host
# key) is the one the engine sent each step, read back from the state. The commands are the steps' own `create`
# inputs from the state; the two steps the up could not reach (configure-container-runtime runs after the download
# that fails, kubeadm-join much later) come from the mock run of the same config, checked to render the same text.

# The files the node steps manage: a second run must leave their content, mode and mtime as they were.
MANAGED_FILES = (
    "/etc/hosts", "/etc/fstab", "/etc/modules-load.d/kubeadm-libvirt.conf", "/etc/sysctl.d/99-kubeadm-libvirt.conf",
    "/etc/containerd/config.toml", "/etc/crictl.yaml",
)  # fmt: skip
SNAPSHOT = "sudo sh -c 'for f in " + " ".join(MANAGED_FILES) + "; do if [ -e $f ]; then stat -c \"%n %s %a %U %Y\" $f && sha256sum $f; else echo \"$f absent\"; fi; done'"
# A TCG guest reboots in 45-90 s alone (two on two cores); the bound leaves room for a loaded machine.
REBOOT_SECONDS = 10 * 60


@pytest.fixture(scope="module")
def nodes(first_up: UpRun) -> Iterator[dict[str, NodeShell]]:
    with node_shells(state_resources(first_up.stack), [node["name"] for node in LAB_NODES]) as shells:
        yield shells


@pytest.fixture(scope="module")
def mocked_lab(lab: Lab) -> StackRun:
    """The lab stack under the mocks: the commands of the steps the first up did not reach."""
    return run_program("lab", overrides=lab_stack_config(lab.host.uri, lab.image))


def step_part(create: str, part: str, **changed: str) -> str:
    """One script of a step's `create` command (`a && b`), with some of its inputs changed."""
    (chosen,) = [(step, env, script) for step, env, script in split_invocation(create) if step == part]
    step, env, script = chosen
    return command_line(step, {**env, **changed}, script)


def scan_host_keys(ip: str, timeout: float = 120.0) -> set[str]:
    """The host keys a guest offers ("type base64"), every type. Retried within a bound: a busy TCG guest can miss
    ssh-keyscan's own timeout, and an empty scan must not pass for "no key"."""
    give_up = time.monotonic() + timeout
    while True:
        scanned = subprocess.run(["ssh-keyscan", "-T", "30", ip], capture_output=True, text=True, timeout=90).stdout
        offered = {" ".join(line.split()[1:3]) for line in scanned.splitlines() if line and not line.startswith("#")}
        if offered or time.monotonic() > give_up:
            return offered
        time.sleep(2)


def rendered_nic(resources: dict[str, dict], name: str) -> tuple[str, dict]:
    """(interface name, its netplan settings) from the network-config the stack rendered for node `name`."""
    rendered = yaml.safe_load(revealed(resources[f"{name}-cloudinit"]["inputs"]["networkConfig"]))
    ((interface, nic),) = rendered["ethernets"].items()
    return interface, nic


def global_addresses(shell: NodeShell) -> list[tuple[str, str]]:
    """(interface, address/prefix) of every global IPv4 address on the node."""
    lines = shell.run("ip -4 -o addr show scope global").stdout.splitlines()
    return [(fields[1], fields[3]) for fields in (line.split() for line in lines)]


def test_each_node_has_its_hostname_and_the_rendered_address_route_and_dns(nodes: dict[str, NodeShell], first_up: UpRun) -> None:
    resources = state_resources(first_up.stack)
    for node in LAB_NODES:
        name, shell = node["name"], nodes[node["name"]]
        interface, nic = rendered_nic(resources, name)
        mac = resources[f"{name}-domain"]["inputs"]["networkInterfaces"][0]["mac"]
        assert nic["match"]["macaddress"] == mac and nic["addresses"] == [f"{node['ip']}/24"]

        assert shell.run("hostname").stdout.strip() == name
        assert shell.run("cat /etc/hostname").stdout.strip() == name
        # The stack's address, on the NIC with the domain's MAC, renamed as rendered, and nowhere else.
        assert global_addresses(shell) == [(interface, nic["addresses"][0])]
        assert shell.run(f"cat /sys/class/net/{interface}/address").stdout.strip() == mac.lower()
        # netplan rendered it: cloud-init's netplan file holds the rendered NIC, networkd runs netplan's unit for it.
        netplan = yaml.safe_load(shell.run("sudo cat /etc/netplan/50-cloud-init.yaml").stdout)
        assert netplan["network"]["ethernets"][interface] == nic
        status = shell.run(f"networkctl status {interface} --no-pager").stdout
        assert re.search(rf"Network File: /run/systemd/network/10-netplan-{interface}\.network", status), status
        route = shell.run("ip -4 route show default").stdout
        assert re.search(rf"^default via {re.escape(nic['routes'][0]['via'])} dev {interface}\b", route, re.MULTILINE), route
        # The resolvers networkd took from the rendered nameservers (the link's state file: DNS=a b ...).
        link_state = shell.run(f"cat /run/systemd/netif/links/$(cat /sys/class/net/{interface}/ifindex)").stdout
        dns = re.search(r"^DNS=(.*)$", link_state, re.MULTILINE)
        assert dns and dns.group(1).split() == nic["nameservers"]["addresses"], link_state
        # ... and what programs resolve with: the resolver file resolved writes from them, which the kubelet hands
        # to CoreDNS (an empty one stops CoreDNS: "no nameservers found").
        upstream = shell.run("cat /run/systemd/resolve/resolv.conf").stdout
        assert re.findall(r"^nameserver (\S+)$", upstream, re.MULTILINE) == nic["nameservers"]["addresses"], upstream
        assert shell.run("readlink /etc/resolv.conf").stdout.strip().endswith("/run/systemd/resolve/stub-resolv.conf")


def test_cloud_init_finished_without_errors(nodes: dict[str, NodeShell]) -> None:
    # What `cloud-init status --long` reads, without starting cloud-init's Python (seconds under TCG): every stage
    # finished without errors, and the final result written (it is, once cloud-init is done).
    for shell in nodes.values():
        status = json.loads(shell.run("sudo cat /var/lib/cloud/data/status.json").stdout)["v1"]
        stages = {stage: status[stage] for stage in ("init-local", "init", "modules-config", "modules-final")}
        assert all(s["finished"] and s["errors"] == [] for s in stages.values()) and status["stage"] is None, status
        result = json.loads(shell.run("sudo cat /var/lib/cloud/data/result.json").stdout)
        assert result["v1"]["errors"] == [], result
        assert local_stage_searches(shell) == [LOCAL_SEED_FOUND]


# cloud-init's local stage must find the seed on every boot: when it does not, it writes a DHCP fallback network
# config that a reboot keeps (lab/image.py, _INITRD_MODULES). What its log says for each boot's search:
LOCAL_SEED_FOUND = "found local data from DataSourceNoCloud"


def local_stage_searches(shell: NodeShell) -> list[str]:
    """The result of each boot's local-stage search for the seed, oldest first, from /var/log/cloud-init.log."""
    log = shell.run("sudo grep -F 'finish: init-local/search-NoCloud:' /var/log/cloud-init.log", check=False).stdout
    return [line.split("SUCCESS: ", 1)[-1].strip() for line in log.splitlines()]


def test_login_is_key_only_with_passwordless_sudo(nodes: dict[str, NodeShell]) -> None:
    shell = nodes[LAB_NODES[1]["name"]]
    assert shell.run("sudo -n true", check=False).returncode == 0
    assert "passwordauthentication no" in shell.run("sudo sshd -T").stdout
    no_key = ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"]
    refused = subprocess.run(
        ["ssh", *shell.options(*no_key, multiplex=False), f"{shell.user}@{shell.ip}", "true"], capture_output=True, text=True, timeout=90
    )
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr, refused.stderr


def test_each_node_presents_exactly_the_host_key_the_stack_pinned(nodes: dict[str, NodeShell], first_up: UpRun, tmp_path: Path) -> None:
    resources = state_resources(first_up.stack)
    for name, shell in nodes.items():
        pinned = " ".join(resources[name]["outputs"]["hostPublicKey"].split()[:2])
        assert " ".join(shell.host_key.split()[:2]) == pinned  # what the steps dialled with
        assert scan_host_keys(shell.ip) == {pinned}, f"{name} offers other keys than the pinned {pinned}"
    # Another node's key in known_hosts, as if a different VM answered at this address: refused.
    cp, w1 = (nodes[node["name"]] for node in LAB_NODES)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{cp.ip} {w1.host_key}\n")
    mismatch = subprocess.run(
        ["ssh", *cp.options("-i", str(cp.key_file), known_hosts=wrong, multiplex=False), f"{cp.user}@{cp.ip}", "true"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert mismatch.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in mismatch.stderr, mismatch.stderr


def test_nodes_reach_each_other_by_name_and_address(nodes: dict[str, NodeShell]) -> None:
    for node in LAB_NODES:
        for other in LAB_NODES:
            if other is node:
                continue
            for target in (other["ip"], other["name"]):
                result = nodes[node["name"]].run(f"ping -c 1 -W 5 {target}", timeout=60, check=False)
                assert result.returncode == 0, f"{node['name']} cannot reach {target}: {result.stdout}{result.stderr}"
                assert f"({other['ip']})" in result.stdout or f"from {other['ip']}" in result.stdout, result.stdout


def test_the_steps_the_up_ran_find_their_work_done_on_a_second_run(nodes: dict[str, NodeShell], first_up: UpRun) -> None:
    resources = state_resources(first_up.stack)

    def second_runs(name: str) -> None:
        shell = nodes[name]
        for step in PREPARED_STEPS:
            state = resources[f"{name}-{step}"]
            first_stdout, first_stderr = revealed(state["outputs"]["stdout"]), revealed(state["outputs"]["stderr"])
            if step != "wait-for-boot":  # it only waits and reads; the others changed the node the first time
                assert change_lines(first_stderr), f"{name}-{step}: the up's run changed nothing?\n{first_stderr}"
            before = shell.run(SNAPSHOT).stdout
            again = shell.run(revealed(state["inputs"]["create"]))
            assert again.stdout.strip() == first_stdout.strip(), f"{name}-{step}: {again.stdout!r} != {first_stdout!r}"
            assert change_lines(again.stderr) == [], f"{name}-{step} changed the node again:\n{again.stderr}"
            assert shell.run(SNAPSHOT).stdout == before, f"{name}-{step}: the second run changed a managed file"

    run_on_each_node(second_runs)


def run_on_each_node(check: Callable[[str], None]) -> None:
    """`check(name)` for every lab node at once (threads started here are in the lab namespace too); any failure raised."""
    with ThreadPoolExecutor(max_workers=len(LAB_NODES)) as pool:
        for future in [pool.submit(check, node["name"]) for node in LAB_NODES]:
            future.result()


def test_os_prep_turns_swap_off_for_good_and_the_runtime_config_is_idempotent(
    nodes: dict[str, NodeShell], first_up: UpRun, mocked_lab: StackRun
) -> None:
    resources = state_resources(first_up.stack)

    def prepare(name: str) -> None:
        shell = nodes[name]
        os_prep = revealed(resources[f"{name}-os-prep"]["inputs"]["create"])
        assert mocked_lab.named(f"{name}-os-prep").input("create") == os_prep  # the mocks render what the engine sent
        runtime = step_part(mocked_lab.named(f"{name}-container-runtime").input("create"), "configure-container-runtime")
        # A swap file in fstab, as on Ubuntu installer images: os-prep must turn it off for good.
        shell.run(
            "sudo sh -c 'test -e /swapfile || { fallocate -l 32M /swapfile && chmod 600 /swapfile && mkswap -q /swapfile"
            " && echo \"/swapfile none swap sw 0 0\" >> /etc/fstab; } && swapon /swapfile'"
        )
        assert shell.run("tail -n +2 /proc/swaps").stdout.strip()
        # The runtime is preinstalled in the guest (Debian's containerd): configuring it needs no download.
        first = {command: shell.run(command) for command in (os_prep, runtime)}
        assert "turning swap off" in first[os_prep].stderr and "wrote /etc/fstab" in first[os_prep].stderr, first[os_prep].stderr
        assert "wrote /etc/containerd/config.toml" in first[runtime].stderr and "restarting containerd" in first[runtime].stderr
        before = shell.run(SNAPSHOT).stdout
        for command, done in first.items():
            again = shell.run(command)
            assert again.stdout == done.stdout and change_lines(again.stderr) == [], f"{name}, second run:\n{again.stderr}"
        assert shell.run(SNAPSHOT).stdout == before, f"{name}: a second run changed a managed file"
        assert_node_prepared(shell)

    run_on_each_node(prepare)


def assert_node_prepared(shell: NodeShell) -> None:
    assert shell.run("tail -n +2 /proc/swaps").stdout.strip() == "", "swap is still on"
    fstab = shell.run("cat /etc/fstab").stdout
    assert re.search(r"^#/swapfile none swap", fstab, re.MULTILINE), fstab
    modules = shell.run("sudo lsmod").stdout
    for module in ("br_netfilter", "overlay", "ip_vs", "ip_vs_rr", "nf_conntrack"):
        assert re.search(rf"^{module}\s", modules, re.MULTILINE), f"{shell.name}: {module} not loaded"
    sysctls = shell.run("sudo sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables")
    assert sysctls.stdout.split() == ["1", "1", "1"]
    hosts = shell.run("cat /etc/hosts").stdout
    for node in LAB_NODES:
        assert f"{node['ip']} {node['name']}" in hosts
    config = shell.run("sudo cat /etc/containerd/config.toml").stdout
    assert "SystemdCgroup = true" in config and re.search(r'sandbox_image = "[^"]+/pause:[0-9.]+"', config), config
    # crictl is not packaged in Debian 12; containerd's own client shows the CRI plugin serving.
    plugins = shell.run("sudo ctr plugins ls").stdout
    assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+.*\bok\b", plugins), plugins


def test_bad_input_fails_clearly_and_leaves_the_node_as_it_was(nodes: dict[str, NodeShell], first_up: UpRun, mocked_lab: StackRun) -> None:
    name = LAB_NODES[1]["name"]
    shell, resources = nodes[name], state_resources(first_up.stack)
    before = shell.run(SNAPSHOT).stdout
    create = {step: revealed(resources[f"{name}-{step}"]["inputs"]["create"]) for step in ("os-prep", "cluster-hosts")}
    create["kubeadm-join"] = mocked_lab.named(f"{name}-kubeadm-join").input("create")
    bad_runs = {
        "os-prep": (step_part(create["os-prep"], "os-prep", KUBE_PROXY_MODE="nftables"), "KUBE_PROXY_MODE=nftables"),
        "cluster-hosts": (step_part(create["cluster-hosts"], "cluster-hosts", CLUSTER_HOSTS="300.1.1.1 bad_name"), "300.1.1.1"),
        "kubeadm-join": (step_part(create["kubeadm-join"], "kubeadm-join", NODE_NAME=""), "NODE_NAME"),
    }  # fmt: skip
    for step, (command, named) in bad_runs.items():
        started = time.monotonic()
        result = shell.run(command, check=False)
        assert result.returncode == 2, f"{step}: exit {result.returncode}\n{result.stderr}"
        assert "invalid input" in result.stderr and named in result.stderr, f"{step}: {result.stderr}"
        assert time.monotonic() - started < 60, f"{step} waited before refusing its input"
    assert shell.run(SNAPSHOT).stdout == before, "a refused run changed the node"


def test_a_rebooted_node_comes_back_with_its_address_name_host_key_and_preparation(nodes: dict[str, NodeShell], first_up: UpRun) -> None:
    node = LAB_NODES[1]
    shell = nodes[node["name"]]
    interface, nic = rendered_nic(state_resources(first_up.stack), node["name"])
    boot_id = shell.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    started = time.monotonic()
    asked = shell.run("sudo systemctl --no-block reboot", check=False)  # 255: the connection went first, which is fine
    assert asked.returncode in (0, 255), asked.stderr
    while True:  # every probe pins the host key, so only the stack's VM can answer it
        probe = shell.run("cat /proc/sys/kernel/random/boot_id", timeout=120, check=False)
        if probe.returncode == 0 and probe.stdout.strip() not in ("", boot_id):
            break
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" not in probe.stderr, probe.stderr
        assert time.monotonic() - started < REBOOT_SECONDS, f"{node['name']} not back after {REBOOT_SECONDS} s: {probe.stderr}"
        time.sleep(3)
    print(f"{node['name']}: back after reboot in {time.monotonic() - started:.0f} s")
    assert local_stage_searches(shell) == [LOCAL_SEED_FOUND] * 2  # the first boot's and the reboot's
    assert shell.run("hostname").stdout.strip() == node["name"]
    assert global_addresses(shell) == [(interface, nic["addresses"][0])]
    assert scan_host_keys(shell.ip) == {" ".join(shell.host_key.split()[:2])}
    assert_node_prepared(shell)


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

    read = steps_by_name(lab.bounded_refresh(stack, REFRESH_SECONDS))
    assert read[f"{name}-domain"] == "refresh" and f"{name}-domain" not in state_resources(stack)
    # The README's refresh leaves the cloud-init disks out (lab/engine.py, REFRESH_EXCLUDES: why): none was read.
    assert [step for step, op in read.items() if step.endswith("-cloudinit") and op == "refresh"] == []
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


def test_a_destroy_with_a_vm_gone_completes_as_the_readme_says_and_leaves_nothing_in_libvirt(lab: Lab, first_up: UpRun) -> None:
    stack = first_up.stack
    gone = NEW_WORKER["name"]
    domain_urn = state_resources(stack)[f"{gone}-domain"]["urn"]
    lab.host.virsh("destroy", gone)
    lab.host.virsh("undefine", gone)

    # The libvirt plugin cannot delete a domain that is not there: the destroy names it and stops there.
    with deadline(QUICK_SECONDS * 2, "pulumi destroy (a VM gone)"):
        with pytest.raises(auto.CommandError, match=rf"(?s){gone}-domain.*Domain not found"):
            stack.destroy(on_output=print)
    # README, Troubleshooting: forget the gone VM and what depends on it (its steps: nothing of them is left to
    # undo), then destroy the rest.
    lab.engine.cli(Path(stack.workspace.work_dir), "state", "delete", domain_urn, "--target-dependents", "--yes", "--stack", stack.name)
    # What the domain was made from stays, for the destroy to delete.
    remaining = {name for name in state_resources(stack) if name.startswith(f"{gone}-")}
    assert remaining == {f"{gone}-disk", f"{gone}-cloudinit", f"{gone}-host-key"}
    with deadline(QUICK_SECONDS * 2, "pulumi destroy"):
        stack.destroy(on_output=print)
    assert lab.host.virsh("list", "--all", "--name").strip() == ""
    assert "kvl-lab" not in lab.host.virsh("net-list", "--all", "--name")
    assert lab.host.virsh("vol-list", "default").strip() == ""
    assert state_resources(stack) == {}
