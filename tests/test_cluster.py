"""The mission for real: `pulumi up` from an empty stack to a Ready, Calico-networked cluster, air-gapped, and back.

A two-node lab stack (Debian 12 under TCG) whose every source is the lab mirror (lab/mirror.py and lab/calico.py,
served inside the lab namespace by lab/mirror_services.py): the OS archive, the OS-archive container runtime, the
pkgs.k8s.io-style repository, the Kubernetes image repository, Calico's manifests and registry, the smoke test's
image. Everything runs for real: container runtime, kubeadm init and join (with the join command the control plane
minted), Calico through the tigera operator, node readiness, the nginx smoke test through every node's NodePort.
Then a second up and a preview change nothing, a worker is added and removed on the live cluster, a worker's VM
lost out of band and one powered off during its join come back with a refresh and an up, and the destroy leaves
nothing. Calico is 3.28.1 (the newest whose operator builds from Go modules here) on Kubernetes 1.34, a
pairing Calico does not test: the stack runs it under allowUntestedCalico (lab/stacks.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from bench.engine import memory_figures, up_figures
from components.calico import stretched_probes
from components.images import calico_images
from components.join_token import join_token_id
from components.kubeadm_config import control_plane_extra_args
from components.mockrun import run_program
from components.validation import NAMESPACE
from lab.engine import config_value, copy_project, deadline
from lab.mirror_services import MirrorEndpoints
from lab.run import validate
from lab.stacks import LAB_GATEWAY, LAB_NODES, lab_stack_config, mirrored_cluster_config
from lab.toolchain import load_pins
from tests.lab_nodes import change_lines, node_shells, revealed
from tests.lab_session import Lab, LabSession, state_resources
from tests.test_scaling import cluster_wide, worker_resources

pytestmark = pytest.mark.cluster

STACK = "cluster"
PINS = load_pins()
KUBERNETES = PINS["mirror"]["kubernetes"]["version"]
CALICO = PINS["calico"]["version"]
CONTROL_PLANE = next(n["name"] for n in LAB_NODES if n["role"] == "control-plane")
WORKERS = [n["name"] for n in LAB_NODES if n["role"] == "worker"]
ADDED_WORKER = {"name": "lab-w2", "role": "worker", "ip": "192.168.150.12"}
# Bounds for TCG on two cores (README, The offline lab, has the measured times). Past them the CLI is interrupted
# and the test fails rather than hanging. The up from empty took 23-34 min on the machine the README's first figures
# come from; on one whose guests run at about half that speed it was still in its calico step at 50 min.
UP_SECONDS = 90 * 60
# An up that adds or brings back a worker: lab run 17's third worker took 1764 s to reach its join (wait-for-boot
# 402 s, container-runtime 500 s, prepull 453 s: three TCG guests on two cores), past the 30 minutes it had.
ADD_SECONDS = 60 * 60
QUICK_SECONDS = 8 * 60
DESTROY_SECONDS = 15 * 60
CONTROL_PLANE_PODS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
PRIVATE_KEY_MARKERS = ("PRIVATE KEY-----",)
BOOTSTRAP_KUBECONFIG = "/etc/kubernetes/bootstrap-kubelet.conf"  # there only while a kubeadm join runs
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the nodes only, from the lab namespace


@dataclass(frozen=True)
class ClusterRun:
    lab: Lab
    stack: auto.Stack
    config: dict[str, Any]  # the stack's config as the lab set it
    error: str
    output: str
    seconds: float
    kubeconfig: Path
    figures: Path  # the run's figures directory (figures*/ in pytest's base temp)


def record_figures(run: ClusterRun, text: str) -> None:
    """Print a figure of a later test (a no-op up's time, an add's steps, restarts) and keep it beside the up's
    figures (figures*/later.txt): pytest shows a passing test's output to no one, and run 16 lost its no-op up's."""
    print(text)
    with (run.figures / "later.txt").open("a") as kept:
        kept.write(text + "\n")


@pytest.fixture(scope="module")
def cluster(lab_session: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRun]:
    lab = lab_session.module_lab(tmp_path_factory.mktemp("state"), with_mirror=True)
    project = copy_project(tmp_path_factory.mktemp("cluster-stack"))
    config = {**lab_stack_config(lab.host.uri, lab.image), **mirrored_cluster_config(MirrorEndpoints(LAB_GATEWAY), KUBERNETES, CALICO)}
    stack = lab.engine.stack(STACK, project, config=config)
    output: list[str] = []
    events: list[auto.EngineEvent] = []
    started = time.monotonic()
    error = lab.bounded_up(stack, UP_SECONDS, output, events)
    seconds = time.monotonic() - started
    print("".join(output[-80:]))
    # Figures for the README (bench/engine.py's reports; nothing here asserts a time), also kept in the run's
    # temporary directory (figures*/up.txt), since pytest shows a passing test's output to no one.
    figures = up_figures("pulumi up from an empty stack to a Ready cluster", run_program(STACK, overrides=config), events, seconds, top=40)
    figures += "\n" + memory_figures(lab.host)
    print(figures)
    figures_dir = tmp_path_factory.mktemp("figures")
    (figures_dir / "up.txt").write_text(figures + "\n")
    # The whole engine output too (secrets masked, tokens redacted by the scripts): a failed step's stderr can sit
    # before another step's, beyond the 80 lines printed above.
    (figures_dir / "up-output.txt").write_text("".join(output))
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    outputs = stack.outputs()
    if "kubeconfig" in outputs:
        kubeconfig.write_text(outputs["kubeconfig"].value)
        kubeconfig.chmod(0o600)
    yield ClusterRun(lab, stack, config, error, "\n".join(output), seconds, kubeconfig, figures_dir)
    lab.leave_empty(stack, DESTROY_SECONDS)  # also when a test failed before the destroy test


def require_ready(run: ClusterRun) -> None:
    """Fail at once, naming the cause, when the up from empty did not finish: the checks of a Ready cluster would
    each wait out their own bounds (a second up re-running the calico step, a rollout, an add) against a cluster
    that is not there, and on a slow host those waits alone outlast CI's time limit."""
    if run.error:
        pytest.fail(f"no Ready cluster to check: the up from empty failed after {run.seconds:.0f} s (see the first test): {run.error[-600:]}")


def kubectl(run: ClusterRun, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(run.lab.mirror.root / "bin" / "kubectl"), "--kubeconfig", str(run.kubeconfig), "--request-timeout=60s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def planned_changes(run: ClusterRun) -> dict[str, str]:
    """A `pulumi preview`'s operation for every resource that is not "same", by name."""
    events: list[auto.EngineEvent] = []
    with deadline(QUICK_SECONDS, "pulumi preview"):
        run.stack.preview(on_event=events.append)
    steps = {
        e.resource_pre_event.metadata.urn.rsplit("::", 1)[1]: e.resource_pre_event.metadata.op.value
        for e in events
        if e.resource_pre_event is not None
    }
    return {name: op for name, op in steps.items() if op != "same"}


def node_names(run: ClusterRun) -> dict[str, str]:
    """name -> Ready condition status, from the API server."""
    nodes = json.loads(kubectl(run, "get", "nodes", "-o", "json"))["items"]
    return {n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready") for n in nodes}


def wait_until_every_node_is_ready(run: ClusterRun, since: str) -> None:
    """The lab's nodes all Ready, within 30 minutes: calico-node starts again on a node that joined again, which
    takes minutes under TCG."""
    deadline_at = time.monotonic() + 30 * 60
    while (nodes := node_names(run)) != dict.fromkeys([CONTROL_PLANE, *WORKERS], "True"):
        if time.monotonic() > deadline_at:
            pytest.fail(f"not every node Ready within 30 minutes of {since}: {nodes}")
        time.sleep(15)


def test_the_up_ran_every_step_from_the_mirror_to_the_smoke_test(cluster: ClusterRun) -> None:
    assert cluster.error == "", cluster.error[-4000:]
    resources = state_resources(cluster.stack)
    completed = [f"{node['name']}-{step}" for node in LAB_NODES for step in ("os-prep", "container-runtime", "kube-packages")]
    completed += [f"{CONTROL_PLANE}-{step}" for step in ("kubeadm-init", "kubeconfig", "kubeadm-join-command", "calico", "cluster-ready", "smoke-test")]
    completed += [f"{worker}-{step}" for worker in WORKERS for step in ("prepull-images", "kubeadm-join")]
    completed += [f"{CONTROL_PLANE}-{worker}-{step}" for worker in WORKERS for step in ("join-command", "join-token-cleanup", "membership")]
    missing = [name for name in completed if name not in resources]
    assert missing == [], f"steps that did not complete: {missing}"
    # kube-packages prints the kubeadm it installed: the mirror's patch, from the mirror's repository.
    assert resources[f"{CONTROL_PLANE}-kube-packages"]["outputs"]["stdout"].strip().endswith(KUBERNETES)
    assert "calico available" in resources[f"{CONTROL_PLANE}-calico"]["outputs"]["stdout"]
    assert f"cluster ready: {len(LAB_NODES)} nodes Ready" in resources[f"{CONTROL_PLANE}-cluster-ready"]["outputs"]["stdout"]
    smoke = resources[f"{CONTROL_PLANE}-smoke-test"]["outputs"]
    assert "smoke test passed" in smoke["stdout"]
    for node in LAB_NODES:  # fetched through every node's NodePort
        assert re.search(rf"http://{re.escape(node['ip'])}:\d+/ served the nginx page", smoke["stderr"]), smoke["stderr"]
    # The untested Calico pairing is said out loud, not hidden.
    assert f"calicoVersion {CALICO.lstrip('v')} supports Kubernetes 1.27-1.30" in cluster.output


def test_every_node_is_ready_with_the_mirrors_kubelet(cluster: ClusterRun) -> None:
    require_ready(cluster)
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted([CONTROL_PLANE, *WORKERS])
    for node in nodes:
        assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBERNETES
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready


def calico_diagnosis(run: ClusterRun, statuses: list[dict]) -> str:
    """What a failure needs to say why: the operator's conditions, Calico's pods that are not ready, its warnings."""
    lines = [
        f"tigerastatus/{s['metadata']['name']} {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}"
        for s in statuses
        for c in s["status"].get("conditions", [])
        if c["status"] == "True" or c["type"] == "Available"
    ]
    for namespace in ("calico-system", "calico-apiserver", "tigera-operator", "kube-system"):
        for pod in json.loads(kubectl(run, "get", "pods", "-n", namespace, "-o", "json"))["items"]:
            containers = pod["status"].get("containerStatuses", [])
            if any(not c.get("ready") or c.get("restartCount") for c in containers) or not containers:
                states = [f"{c['name']} ready={c.get('ready')} restarts={c.get('restartCount')} {json.dumps(c.get('state'))}" for c in containers]
                lines.append(f"pod {namespace}/{pod['metadata']['name']} on {pod['spec'].get('nodeName')}: {'; '.join(states) or pod['status']}")
    lines.append(kubectl(run, "get", "events", "-n", "calico-system", "--field-selector", "type=Warning", "--sort-by=.lastTimestamp")[-6000:])
    return "\n".join(lines)


def test_calico_is_available_and_runs_exactly_the_images_the_stack_lists(cluster: ClusterRun) -> None:
    require_ready(cluster)
    # The calico step saw every tigerastatus Available. Under TCG the control plane's calico-node misses a
    # readiness probe now and then (its exec probe starts a Go binary within 10 s on a guest running ten times
    # slower), and the operator then reports calico not Available until the next probe passes: wait for it.
    wanted = {"calico", "ippools"} | ({"apiserver"} if validate(STACK, cluster.config).kubernetes.calico_api_server else set())
    started = time.monotonic()
    deadline_at = started + 600
    while True:
        statuses = json.loads(kubectl(cluster, "get", "tigerastatus", "-o", "json"))["items"]
        available = {s["metadata"]["name"]: next((c["status"] for c in s["status"].get("conditions", []) if c["type"] == "Available"), "") for s in statuses}
        if wanted <= set(available) and set(available.values()) == {"True"}:
            record_figures(cluster, f"every tigerastatus Available after {time.monotonic() - started:.0f} s of waiting")
            break
        if time.monotonic() > deadline_at:
            pytest.fail(f"tigerastatus not all Available within 10 minutes: {available}\n{calico_diagnosis(cluster, statuses)}")
        time.sleep(10)
    running: set[str] = set()
    for namespace in ("calico-system", "calico-apiserver", "tigera-operator"):
        pods = json.loads(kubectl(cluster, "get", "pods", "-n", namespace, "-o", "json"))["items"]
        running |= {c["image"] for p in pods for c in (*p["spec"].get("initContainers", []), *p["spec"]["containers"])}
    listed, problem = calico_images(validate(STACK, cluster.config).kubernetes)
    assert problem is None
    # What the real operator deployed for the rendered Installation is what `python3 -m components.images` lists
    # (and the workers prepull): no more, no less.
    assert running == set(listed), (sorted(running), listed)


def test_calicos_pods_run_with_the_probes_the_stack_stretched(cluster: ClusterRun) -> None:
    """calico.py's admission policy reached every Calico pod with a liveness probe: a startup probe repeating that
    check with the scaled allowance, and the scaled timeouts. The restarts are printed: a figure, not a contract."""
    require_ready(cluster)
    config = validate(STACK, cluster.config)
    failures, timeout = stretched_probes(config)
    pods = json.loads(kubectl(cluster, "get", "pods", "-n", "calico-system", "-o", "json"))["items"]
    probed = [p for p in pods if "livenessProbe" in p["spec"]["containers"][0]]
    assert {p["metadata"]["labels"].get("k8s-app") for p in probed} >= {"calico-node", "calico-typha"}
    for pod in probed:
        container = pod["spec"]["containers"][0]
        assert container["startupProbe"]["failureThreshold"] == failures, pod["metadata"]["name"]
        assert {k: v for k, v in container["startupProbe"].items() if k not in ("periodSeconds", "failureThreshold", "timeoutSeconds")} == {
            k: v for k, v in container["livenessProbe"].items() if k not in ("periodSeconds", "failureThreshold", "timeoutSeconds")
        }
        assert container["livenessProbe"]["timeoutSeconds"] == timeout
        restarts = [c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", [])]
        record_figures(cluster, f"{pod['metadata']['name']} on {pod['spec'].get('nodeName')}: {restarts} restarts")


def test_the_control_plane_kube_proxy_and_coredns_run_from_the_mirror(cluster: ClusterRun) -> None:
    require_ready(cluster)
    deadline_at = time.monotonic() + 600  # static pods restart a few times under TCG before they settle
    while True:
        pods = json.loads(kubectl(cluster, "get", "pods", "-n", "kube-system", "-o", "json"))["items"]
        running = {(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods if p["status"].get("phase") == "Running"}
        wanted = {(f"{name}-{CONTROL_PLANE}", CONTROL_PLANE) for name in CONTROL_PLANE_PODS}
        proxies = {node for name, node in running if name.startswith("kube-proxy-")}
        dns = [name for name, _ in running if name.startswith("coredns-")]
        if wanted <= running and proxies == {CONTROL_PLANE, *WORKERS} and len(dns) == 2:
            break
        if time.monotonic() > deadline_at:
            pytest.fail(f"running in kube-system: {sorted(running)}")
        time.sleep(10)
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    mirror_repository = MirrorEndpoints(LAB_GATEWAY).image_repository
    assert all(image.startswith(mirror_repository + "/") for image in images), images
    # The stack's timeoutScale stretches leader election, the API server's etcd checks and etcd's raft timing
    # (components/kubeadm_config.py says why); the restarts are printed, not asserted: how often a starved
    # component still goes down is a figure, not a contract.
    for component, args in control_plane_extra_args(validate(STACK, cluster.config).timeouts).items():
        (pod,) = [p for p in pods if p["metadata"]["name"] == f"{component}-{CONTROL_PLANE}"]
        assert {f"--{item['name']}={item['value']}" for item in args} <= set(pod["spec"]["containers"][0]["command"]), component
    for component in CONTROL_PLANE_PODS:
        (pod,) = [p for p in pods if p["metadata"]["name"] == f"{component}-{CONTROL_PLANE}"]
        record_figures(cluster, f"{component}: {pod['status']['containerStatuses'][0]['restartCount']} restarts")


def nodeport_diagnosis(cluster: ClusterRun, node: str, namespace: str, port: str) -> str:
    """What a failed NodePort leaves to read: the service's endpoints, every kube-proxy, and on the node its rules
    for the port and its kube-proxy's last log lines."""
    parts = []
    for args in (("-n", namespace, "get", "endpointslices", "-o", "wide"), ("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-proxy", "-o", "wide")):
        try:
            parts.append(kubectl(cluster, *args))
        except (AssertionError, subprocess.TimeoutExpired) as error:
            parts.append(f"kubectl {' '.join(args)}: {error}")
    on_node = (
        f"sudo iptables-save | grep -e '{port}' | head -20; sudo crictl ps -a --name kube-proxy; "
        "sudo crictl logs --tail 20 \"$(sudo crictl ps -a --name kube-proxy -q | head -1)\" 2>&1"
    )
    try:
        with node_shells(state_resources(cluster.stack), [node]) as shells:
            done = shells[node].run(on_node, timeout=120, check=False)
        parts.append(f"on {node} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    except (AssertionError, subprocess.TimeoutExpired) as error:
        parts.append(f"on {node}: {error}")
    return "\n".join(parts)


def test_a_nodeport_serves_through_every_node_from_the_lab_namespace(cluster: ClusterRun) -> None:
    """What a user on the libvirt host does after `pulumi up`: run something, reach it from outside the cluster."""
    require_ready(cluster)
    namespace = "lab-reach"
    image = MirrorEndpoints(LAB_GATEWAY).smoke_image
    kubectl(cluster, "create", "namespace", namespace)
    try:
        kubectl(cluster, "-n", namespace, "create", "deployment", "web", f"--image={image}", "--replicas=2")
        kubectl(cluster, "-n", namespace, "create", "service", "nodeport", "web", "--tcp=80:80")
        kubectl(cluster, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=600s", timeout=660)
        port = kubectl(cluster, "-n", namespace, "get", "service", "web", "-o", "jsonpath={.spec.ports[0].nodePort}")
        for node in LAB_NODES:
            # Each node's kube-proxy programs the port once it sees the ready endpoints; in lab run 17 the control
            # plane's (load average 20-30) had not within 120 s.
            deadline_at = time.monotonic() + 300
            while True:
                try:
                    with _DIRECT.open(f"http://{node['ip']}:{port}/", timeout=10) as response:
                        assert "Welcome to nginx" in response.read().decode()
                        break
                except OSError as error:
                    if time.monotonic() > deadline_at:
                        pytest.fail(f"{node['name']}:{port} did not serve the page: {error}\n{nodeport_diagnosis(cluster, node['name'], namespace, port)}")
                    time.sleep(3)
    finally:
        kubectl(cluster, "delete", "namespace", namespace, "--wait=false")


def test_each_workers_token_is_deleted_once_it_has_joined(cluster: ClusterRun) -> None:
    """Minted without expiry for the join (a retry days later still works), then deleted by the clean-up step."""
    require_ready(cluster)
    secrets = json.loads(kubectl(cluster, "get", "secrets", "-n", "kube-system", "--field-selector", "type=bootstrap.kubernetes.io/token", "-o", "json"))
    names = {s["metadata"]["name"] for s in secrets["items"]}
    for worker in WORKERS:
        assert f"bootstrap-token-{join_token_id(worker)}" not in names, names
    # The stack's joinCommand output keeps its own token, kubeadm's default 24 h, for a human joining a node by hand.
    stack_token_id = cluster.stack.outputs()["joinCommand"].value.split("--token ")[1].split(".")[0]
    assert f"bootstrap-token-{stack_token_id}" in names


def test_outputs_and_state_hold_no_secret_in_plain_text(cluster: ClusterRun) -> None:
    outputs = cluster.stack.outputs()
    assert outputs["kubeconfig"].secret and outputs["joinCommand"].secret
    join_command = outputs["joinCommand"].value
    assert join_command.startswith("kubeadm join ")
    work_dir = Path(cluster.stack.workspace.work_dir)
    exported = cluster.lab.engine.cli(work_dir, "stack", "export", "--stack", STACK)
    token = join_command.split("--token ")[1].split()[0]
    client_key = next(line for line in outputs["kubeconfig"].value.splitlines() if "client-key-data" in line).split(":")[1].strip()
    for secret in (token, client_key, *PRIVATE_KEY_MARKERS):
        assert secret not in exported
        assert secret not in cluster.output


def test_a_second_up_and_a_preview_change_nothing(cluster: ClusterRun) -> None:
    require_ready(cluster)
    started = time.monotonic()
    with deadline(QUICK_SECONDS, "pulumi up (no-op)"):
        result = cluster.stack.up(on_output=print)
    record_figures(cluster, f"no-op pulumi up of the Ready cluster: {time.monotonic() - started:.0f} s")
    assert set(result.summary.resource_changes or {}) == {"same"}, result.summary.resource_changes
    assert planned_changes(cluster) == {}


# The Kubernetes steps the up completed, per node; run again exactly as the up sent them (create and stdin from the
# state), each must find its work done: exit 0, say so, and change nothing (tests/lab_nodes.py's change markers).
RERUN_STEPS = {
    CONTROL_PLANE: ("container-runtime", "kube-packages", "kubeadm-init", "calico"),
    **{worker: ("container-runtime", "kube-packages", "prepull-images", "kubeadm-join") for worker in WORKERS},
}
GUARD_MESSAGES = {"kubeadm-init": "already initialised", "kubeadm-join": "already joined", "kube-packages": "already installed"}


def test_every_kubernetes_step_run_again_reports_its_guard_and_changes_nothing(cluster: ClusterRun) -> None:
    require_ready(cluster)
    resources = state_resources(cluster.stack)
    with node_shells(resources, list(RERUN_STEPS)) as shells:
        for name, steps in RERUN_STEPS.items():
            for step in steps:
                inputs = resources[f"{name}-{step}"]["inputs"]
                again = shells[name].run(revealed(inputs["create"]), stdin=revealed(inputs.get("stdin") or ""), timeout=900)
                assert change_lines(again.stderr) == [], f"{name}-{step} changed the node again:\n{again.stderr}"
                if step in GUARD_MESSAGES:
                    assert GUARD_MESSAGES[step] in again.stderr, f"{name}-{step}:\n{again.stderr}"


def set_nodes(run: ClusterRun, nodes: list[dict]) -> None:
    run.stack.set_config(f"{NAMESPACE}:nodes", config_value(nodes))
    run.config[f"{NAMESPACE}:nodes"] = nodes


@pytest.mark.scaling
def test_a_worker_added_to_the_live_cluster_joins_and_only_its_resources_change(cluster: ClusterRun) -> None:
    require_ready(cluster)
    before = set(state_resources(cluster.stack))
    set_nodes(cluster, [*LAB_NODES, ADDED_WORKER])
    planned = planned_changes(cluster)
    expected_new = worker_resources(ADDED_WORKER["name"], CONTROL_PLANE)
    assert {name for name, op in planned.items() if op == "create"} == expected_new
    # tests/test_scaling.py's prediction from the mocks: the cluster-wide steps re-run, nothing else of the cluster.
    assert {name for name, op in planned.items() if op != "create"} == cluster_wide(list(LAB_NODES), CONTROL_PLANE)
    output: list[str] = []
    events: list[auto.EngineEvent] = []
    started = time.monotonic()
    error = cluster.lab.bounded_up(cluster.stack, ADD_SECONDS, output, events)
    mock = run_program(STACK, overrides=cluster.config)
    record_figures(cluster, up_figures(f"pulumi up adding {ADDED_WORKER['name']} to the Ready cluster", mock, events, time.monotonic() - started))
    record_figures(cluster, memory_figures(cluster.lab.host))
    assert error == "", error[-4000:]
    assert set(state_resources(cluster.stack)) - before == expected_new
    assert node_names(cluster) == dict.fromkeys([CONTROL_PLANE, *WORKERS, ADDED_WORKER["name"]], "True")
    # It joined with a token of its own, which is gone now that it has joined.
    secrets = kubectl(cluster, "get", "secrets", "-n", "kube-system", "-o", "name")
    assert f"bootstrap-token-{join_token_id(ADDED_WORKER['name'])}" not in secrets


@pytest.mark.scaling
def test_a_worker_removed_is_drained_deleted_and_its_vm_gone(cluster: ClusterRun) -> None:
    require_ready(cluster)
    name = ADDED_WORKER["name"]
    if name not in node_names(cluster):
        pytest.fail(f"{name} was not added by the test before (see its failure)")
    before = {n: r["outputs"].get("stdout") for n, r in state_resources(cluster.stack).items()}
    set_nodes(cluster, list(LAB_NODES))
    output: list[str] = []
    error = cluster.lab.bounded_up(cluster.stack, ADD_SECONDS, output)
    assert error == "", error[-4000:]
    after = state_resources(cluster.stack)
    assert set(before) - set(after) == worker_resources(name, CONTROL_PLANE)
    assert node_names(cluster) == dict.fromkeys([CONTROL_PLANE, *WORKERS], "True")
    # The Node object is gone from the API: only the membership's drain-node hook deletes it (a VM that goes away
    # leaves its Node behind, NotReady).
    assert name not in cluster.lab.host.virsh("list", "--all", "--name").split()


@pytest.mark.scaling
def test_the_join_command_output_joins_a_machine_by_hand(cluster: ClusterRun) -> None:
    """The `joinCommand` output as README, Outputs, offers it: run with sudo on a machine that has the container
    runtime and kube packages, it joins that machine, which becomes Ready. The machine is a worker taken out of the
    cluster as kubeadm's documentation takes a node out (drain, delete the Node, `kubeadm reset`): a VM with the
    packages and no cluster membership, what a user prepares by hand, without a third TCG guest on two cores. The
    stack's state is untouched by any of it: the worker's own join step finds it joined, and nothing is planned."""
    require_ready(cluster)
    worker = WORKERS[0]
    join_command = cluster.stack.outputs()["joinCommand"].value
    kubectl(cluster, "drain", worker, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=600s", timeout=660)
    kubectl(cluster, "delete", "node", worker)
    with node_shells(state_resources(cluster.stack), [worker]) as shells:
        shell = shells[worker]
        shell.run("sudo kubeadm reset --force", timeout=600)
        assert shell.run("test -e /etc/kubernetes/kubelet.conf", check=False).returncode == 1  # no longer joined
        # The secret goes on stdin, as the stack sends it, never on a command line another process could read.
        started = time.monotonic()
        shell.run("read -r join && sudo $join", stdin=join_command + "\n", timeout=1200)
        record_figures(cluster, f"{worker} joined by hand in {time.monotonic() - started:.0f} s")
    wait_until_every_node_is_ready(cluster, f"{worker} joining by hand")
    record_figures(cluster, f"{worker} Ready {time.monotonic() - started:.0f} s after its join started")
    assert planned_changes(cluster) == {}


@pytest.mark.faults
def test_a_joined_workers_vm_destroyed_out_of_band_comes_back_and_rejoins(cluster: ClusterRun) -> None:
    """The mission's fault: a joined worker's VM lost outside Pulumi (destroyed and undefined), then the README's
    `pulumi refresh --exclude ...` and `pulumi up`. The worker comes back as a new VM under the same name and joins
    again; the old membership's drain hook (run after that join, as a replaced step's delete) leaves the new VM's Node
    alone; then nothing is left to change."""
    require_ready(cluster)
    worker = WORKERS[0]
    lab = cluster.lab
    lost = lab.host.virsh("domuuid", worker).strip()
    lab.host.virsh("destroy", worker)
    lab.host.virsh("undefine", worker)
    lab.bounded_refresh(cluster.stack, QUICK_SECONDS)
    assert f"{worker}-domain" not in state_resources(cluster.stack)

    output: list[str] = []
    events: list[auto.EngineEvent] = []
    started = time.monotonic()
    error = lab.bounded_up(cluster.stack, ADD_SECONDS, output, events)
    mock = run_program(STACK, overrides=cluster.config)
    record_figures(cluster, up_figures(f"pulumi up bringing back {worker} after its VM was lost", mock, events, time.monotonic() - started))
    assert error == "", error[-4000:]
    back = lab.host.virsh("domuuid", worker).strip()
    assert back != lost
    assert node_names(cluster) == dict.fromkeys([CONTROL_PLANE, *WORKERS], "True")
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    (node,) = [n for n in nodes if n["metadata"]["name"] == worker]
    assert node["status"]["nodeInfo"]["systemUUID"].lower() == back  # the new VM's kubelet
    # It joined with a token of its own, gone now that it has joined.
    secrets = kubectl(cluster, "get", "secrets", "-n", "kube-system", "-o", "name")
    assert f"bootstrap-token-{join_token_id(worker)}" not in secrets
    assert planned_changes(cluster) == {}


@pytest.mark.faults
def test_a_worker_powered_off_during_its_join_is_started_and_joins_on_the_next_up(cluster: ClusterRun) -> None:
    """The mission's other fault: a worker's VM powered off while `pulumi up` runs its kubeadm join (once the join has
    written the cluster's CA and its bootstrap kubeconfig, synced to disk), then the README's `pulumi refresh
    --exclude ...` and `pulumi up`. That up starts the VM (the refresh recorded it stopped) and runs the join step,
    which dials the VM while it boots; then the worker is Ready and nothing is left to change. On the restarted VM
    either the join step undoes the half-done join and joins, or the kubelet, started at boot with the bootstrap
    kubeconfig kubeadm left, finishes the TLS bootstrap first and the step finds the node joined: both converge, and
    which one happened is recorded. The join is made to run again as kubeadm's documentation re-joins a node: its
    Node drained and deleted, then `--replace` of its join step (whose delete resets the node) and of the step that
    mints its token (the old one was deleted once used). A new worker's join would do too, at the cost of a third
    TCG guest's whole preparation."""
    require_ready(cluster)
    worker = WORKERS[0]
    lab = cluster.lab
    resources = state_resources(cluster.stack)
    replace = [resources[name]["urn"] for name in (f"{worker}-kubeadm-join", f"{CONTROL_PLANE}-{worker}-join-command")]
    kubectl(cluster, "drain", worker, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=600s", timeout=660)
    kubectl(cluster, "delete", "node", worker)

    output: list[str] = []
    started = time.monotonic()
    with node_shells(resources, [worker]) as shells:
        # kubeadm join writes bootstrap-kubelet.conf for the kubelet's TLS bootstrap and removes it once joined: while
        # it exists the join is half-way. (The replaced join's delete, the reset, runs before the new join.)
        shells[worker].run(f"sudo test ! -e {BOOTSTRAP_KUBECONFIG}")
        half_way = shells[worker].start(f"sudo sh -c 'until test -e {BOOTSTRAP_KUBECONFIG}; do sleep 0.2; done; sync'")

        def power_off_half_way() -> None:
            if half_way.wait() == 0:  # not when killed below: the up ended before the join got half-way
                lab.host.virsh("destroy", worker)

        with ThreadPoolExecutor(max_workers=1) as pool:
            power_off = pool.submit(power_off_half_way)
            try:
                error = lab.bounded_up(cluster.stack, ADD_SECONDS, output, replace=replace)
            finally:
                if half_way.poll() is None:
                    half_way.kill()
            power_off.result()
    assert half_way.returncode == 0, f"the up ended before {worker}'s join got half-way: {error[-2000:]}"
    record_figures(cluster, f"{worker} powered off during its join: the up failed {time.monotonic() - started:.0f} s after it started")
    assert f"{worker}-kubeadm-join" in error, error[-4000:]
    lab.bounded_refresh(cluster.stack, QUICK_SECONDS)
    assert state_resources(cluster.stack)[f"{worker}-domain"]["outputs"]["running"] is False

    output = []
    started = time.monotonic()
    error = lab.bounded_up(cluster.stack, ADD_SECONDS, output)
    record_figures(cluster, f"pulumi up after {worker} was powered off during its join: {time.monotonic() - started:.0f} s")
    assert error == "", error[-4000:]
    join_log = revealed(state_resources(cluster.stack)[f"{worker}-kubeadm-join"]["outputs"]["stderr"])
    undone = "an earlier 'kubeadm join' stopped half-way; undoing it with kubeadm reset -f" in join_log
    assert undone or "this node has already joined" in join_log, join_log[-3000:]
    record_figures(cluster, f"{worker}'s join step then " + ("undid the half-done join and joined" if undone else "found it joined by its kubelet"))
    wait_until_every_node_is_ready(cluster, f"{worker}'s join")
    record_figures(cluster, f"{worker} Ready {time.monotonic() - started:.0f} s after that up started")
    secrets = kubectl(cluster, "get", "secrets", "-n", "kube-system", "-o", "name")
    assert f"bootstrap-token-{join_token_id(worker)}" not in secrets
    assert planned_changes(cluster) == {}


def test_destroy_removes_every_vm_and_volume(cluster: ClusterRun) -> None:
    with deadline(DESTROY_SECONDS, "pulumi destroy"):
        cluster.stack.destroy(on_output=print)
    assert state_resources(cluster.stack) == {}
    assert cluster.lab.host.virsh("list", "--all", "--name").strip() == ""
    assert cluster.lab.host.virsh("vol-list", "--pool", "default").strip() == ""
