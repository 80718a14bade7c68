"""The kubeadm layer's command graph, from the real program under mocks with the dev stack config."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from components.join_token import join_token_id
from components.kubeadm_config import KINDS
from components.mockrun import Registration, StackRun, mock_domain_uuid, redact, run_program
from components.plan import readable_command, split_invocation
from components.step_graph import command_dependencies, longest_chain, redundant_waits
from tests.golden import assert_matches_golden
from tests.node_sandbox import install_fakes, run_sandboxed

COMMAND = "command:remote:Command"
MASTER, SLAVE1, SLAVE2 = "kubernetes-master", "kubernetes-slave1", "kubernetes-slave2"
NODE_STEPS = ("wait-for-boot", "os-prep", "container-runtime", "kube-packages")


def commands(run: StackRun) -> dict[str, Registration]:
    return {r.name: r for r in run.of_type(COMMAND)}


def depends_on(run: StackRun, name: str) -> set[str]:
    return set(command_dependencies(run)[name])


def test_one_command_per_step(dev_run: StackRun) -> None:
    names = set(commands(dev_run))
    expected = {f"{node}-{step}" for node in (MASTER, SLAVE1, SLAVE2) for step in (*NODE_STEPS, "cluster-hosts")}
    expected |= {f"{MASTER}-{step}" for step in ("kubeadm-init", "kubeconfig", "calico", "kubeadm-join-command", "cluster-ready", "smoke-test")}
    expected |= {f"{MASTER}-{w}-{step}" for w in (SLAVE1, SLAVE2) for step in ("join-command", "join-token-cleanup", "membership")}
    expected |= {f"{w}-{step}" for w in (SLAVE1, SLAVE2) for step in ("prepull-images", "kubeadm-join")}
    assert names == expected
    cluster = dev_run.named("kubeadm")
    assert cluster.type == "kubeadm-libvirt:index:KubeadmCluster"
    assert all(r.parent == cluster.urn for r in commands(dev_run).values())


def test_steps_run_in_the_tutorials_order(dev_run: StackRun) -> None:
    for node in (MASTER, SLAVE1, SLAVE2):
        assert depends_on(dev_run, f"{node}-wait-for-boot") == set()
        for before, after in zip(NODE_STEPS, NODE_STEPS[1:]):
            assert depends_on(dev_run, f"{node}-{after}") == {f"{node}-{before}"}
        assert depends_on(dev_run, f"{node}-cluster-hosts") == {f"{node}-wait-for-boot"}
    assert depends_on(dev_run, f"{MASTER}-kubeadm-init") == {f"{MASTER}-kube-packages"}
    for step in ("kubeconfig", "calico", "kubeadm-join-command"):
        assert depends_on(dev_run, f"{MASTER}-{step}") == {f"{MASTER}-kubeadm-init"}
    for worker in (SLAVE1, SLAVE2):
        assert depends_on(dev_run, f"{worker}-prepull-images") == {f"{worker}-kube-packages"}
        # kubeadm's order: the pod network before any join (and a failed Calico skips the join and the Ready wait).
        assert depends_on(dev_run, f"{worker}-kubeadm-join") == {
            f"{worker}-prepull-images", f"{MASTER}-{worker}-join-command", f"{MASTER}-calico"
        }  # fmt: skip
        assert depends_on(dev_run, f"{MASTER}-{worker}-membership") == {f"{worker}-kubeadm-join"}
        assert depends_on(dev_run, f"{MASTER}-{worker}-join-token-cleanup") == {f"{worker}-kubeadm-join"}
    assert depends_on(dev_run, f"{MASTER}-cluster-ready") == {
        f"{MASTER}-{SLAVE1}-membership", f"{MASTER}-{SLAVE2}-membership",
        *(f"{node}-cluster-hosts" for node in (MASTER, SLAVE1, SLAVE2)),
    }  # fmt: skip
    assert depends_on(dev_run, f"{MASTER}-smoke-test") == {f"{MASTER}-cluster-ready"}


def test_critical_path_does_not_grow_with_the_node_count(dev_run: StackRun) -> None:
    workers = [{"name": f"worker-{i:02d}", "role": "worker", "ip": f"192.168.141.{10 + i}"} for i in range(29)]
    big = run_program("dev", overrides={"nodes": [{"name": MASTER, "role": "control-plane", "ip": "192.168.141.130"}, *workers]})
    small_chain, big_chain = longest_chain(dev_run), longest_chain(big)
    assert redundant_waits(dev_run) == [] and redundant_waits(big) == []
    assert len(small_chain) == len(big_chain) == 10, small_chain
    assert [name.split("-", 2)[-1] for name in small_chain][:5] == [
        "wait-for-boot", "os-prep", "container-runtime", "kube-packages", "kubeadm-init"
    ]


def test_worker_join_consumes_the_control_planes_join_command(dev_run: StackRun) -> None:
    for worker in (SLAVE1, SLAVE2):
        join = dev_run.named(f"{worker}-kubeadm-join")
        token = dev_run.named(f"{MASTER}-{worker}-join-command")
        assert join.property_dependencies["stdin"] == (token.urn,)
        assert join.is_secret("stdin") and join.input("stdin").startswith("kubeadm join 192.168.141.130:6443 ")
        assert "abcdef.0123456789abcdef" not in join.input("create")  # the token only travels on stdin
        assert token.input("connection")["host"] == "192.168.141.130"
        assert join.input("connection")["host"] == {SLAVE1: "192.168.141.131", SLAVE2: "192.168.141.132"}[worker]


def test_each_worker_token_lives_from_its_mint_until_its_join(dev_run: StackRun) -> None:
    """Minted without expiry (so a join retried later still works), deleted once the worker has joined, and by the
    token step's own delete hook when the worker goes before it joined; always by an id derived from the name."""
    by_urn = dev_run.by_urn()
    ids = set()
    for worker in (SLAVE1, SLAVE2):
        token = dev_run.named(f"{MASTER}-{worker}-join-command")
        join = dev_run.named(f"{worker}-kubeadm-join")
        cleanup = dev_run.named(f"{MASTER}-{worker}-join-token-cleanup")
        token_id = join_token_id(worker)
        ids.add(token_id)
        for step, hook, action in ((token, "create", "mint"), (token, "delete", "delete-if-reachable"), (cleanup, "create", "delete")):
            ((script, env, _),) = split_invocation(step.input(hook))
            assert (script, env["TOKEN_ACTION"], env["TOKEN_ID"], env["NODE_NAME"]) == ("join-token", action, token_id, worker)
        assert by_urn[token.deleted_with].name == by_urn[cleanup.deleted_with].name == f"{MASTER}-domain"
        # The clean-up reads the join command the worker got (the join step's own input, a secret): it waits for
        # the join alone and runs again whenever a new token reaches the worker.
        assert cleanup.property_dependencies["stdin"] == (join.urn,) and depends_on(dev_run, cleanup.name) == {join.name}
        assert cleanup.is_secret("stdin") and cleanup.input("stdin") == join.input("stdin")
        assert cleanup.input("connection")["host"] == "192.168.141.130" and not cleanup.input("delete")
        # The join names the step to replace when its token is refused.
        assert split_invocation(join.input("create"))[0][1]["JOIN_TOKEN_STEP"] == token.name
    assert len(ids) == 2 and all(re.fullmatch(r"[a-z0-9]{6}", token_id) for token_id in ids)


def test_credentials_are_secret_outputs_and_never_logged(dev_run: StackRun) -> None:
    for name in (f"{MASTER}-kubeconfig", f"{MASTER}-kubeadm-join-command", f"{MASTER}-{SLAVE1}-join-command"):
        step = dev_run.named(name)
        assert "stdout" in step.additional_secret_outputs and step.input("logging") == "none", name
    kubeconfig, join = dev_run.outputs["kubeconfig"], dev_run.outputs["joinCommand"]
    assert kubeconfig.secret and "server: https://192.168.141.130:6443" in kubeconfig.value
    assert join.secret and join.value.startswith("kubeadm join ")
    assert dev_run.outputs["controlPlaneEndpoint"].value == "https://192.168.141.130:6443"


def test_connections_carry_the_key_as_a_secret_and_wait_for_boot(dev_run: StackRun) -> None:
    for step in commands(dev_run).values():
        assert step.is_secret("connection"), step.name
        connection = step.input("connection")
        assert connection["user"] == "ubuntu" and "PRIVATE KEY" in connection["privateKey"]
        if step.name.endswith("-wait-for-boot"):  # waits minutes for a first boot
            assert connection["dialErrorLimit"] >= 100 and connection["perDialTimeout"] > 0
        else:  # outlasts a reboot (a VM started again by the up: 30 dials of the 5 s capped backoff alone are
            # 150 s), yet fails well before the boot's bound
            assert 30 <= connection["dialErrorLimit"] <= 50 and 0 < connection["perDialTimeout"] <= 15, step.name
        assert step.input("addPreviousOutputInEnv") is False
        assert "environment" not in step.inputs  # sshd would drop it; nothing secret may travel there


def test_steps_with_a_delete_replace_delete_first(dev_run: StackRun) -> None:
    by_urn = dev_run.by_urn()
    for step in commands(dev_run).values():
        assert step.delete_before_replace == bool(step.input("delete")), step.name
    join = dev_run.named(f"{SLAVE1}-kubeadm-join")
    assert "reset-node" in join.input("delete") and by_urn[join.deleted_with].name == f"{SLAVE1}-domain"
    membership = dev_run.named(f"{MASTER}-{SLAVE1}-membership")
    assert "drain-node" in membership.input("delete") and by_urn[membership.deleted_with].name == f"{MASTER}-domain"
    assert "node-ready" in membership.input("create")


def test_replacing_a_vm_reruns_its_steps(dev_run: StackRun) -> None:
    node_at = {"192.168.141.130": MASTER, "192.168.141.131": SLAVE1, "192.168.141.132": SLAVE2}
    for step in commands(dev_run).values():
        assert "triggers[*]" in step.replace_on_changes, step.name
        node = node_at[step.input("connection")["host"]]
        assert mock_domain_uuid(f"{node}-domain") in step.input("triggers"), step.name
    assert dev_run.named(f"{SLAVE1}-os-prep").input("triggers") == [mock_domain_uuid(f"{SLAVE1}-domain")]
    assert dev_run.named(f"{SLAVE1}-kubeadm-join").input("triggers") == [mock_domain_uuid(f"{SLAVE1}-domain"), mock_domain_uuid(f"{MASTER}-domain")]


def test_guards_are_in_the_scripts(dev_run: StackRun) -> None:
    assert "/etc/kubernetes/admin.conf" in dev_run.named(f"{MASTER}-kubeadm-init").input("create")
    assert "/etc/kubernetes/kubelet.conf" in dev_run.named(f"{SLAVE1}-kubeadm-join").input("create")
    for step in commands(dev_run).values():
        create = step.input("create")
        if "bash -c" in create:
            assert "set -euo pipefail" in create, step.name


def test_no_secret_reaches_a_plain_input(dev_run_with_key: StackRun, key_pair) -> None:
    secret_body = key_pair.private_key.splitlines()[1]
    for step in commands(dev_run_with_key).values():
        plain = json.dumps(redact(step.inputs))
        assert secret_body not in plain and "abcdef.0123456789abcdef" not in plain, step.name


def step_golden_files(run: StackRun) -> dict[str, str]:
    """One golden file per step kind when every node renders it alike, else one per node (e.g. kube-packages)."""
    by_kind: dict[str, dict[str, str]] = {}
    for name, step in commands(run).items():
        node = next(n for n in (MASTER, SLAVE1, SLAVE2) if name.startswith(n + "-"))
        kind = name.removeprefix(node + "-").replace(SLAVE1, "WORKER").replace(SLAVE2, "WORKER")
        text = readable_command(step.input("create"))
        if step.input("delete"):
            text += "\n# on delete\n" + readable_command(step.input("delete"))
        by_kind.setdefault(kind, {})[name] = text
    files = {}
    for kind, texts in by_kind.items():
        if len(set(texts.values())) == 1:
            files[f"dev/steps/{kind}.txt"] = next(iter(texts.values()))
        else:
            files.update({f"dev/steps/{name}.txt": text for name, text in texts.items()})
    return files


def test_rendered_steps_match_golden_files(dev_run: StackRun) -> None:
    files = step_golden_files(dev_run)
    committed = {f"dev/steps/{p.name}" for p in (Path(__file__).parent / "golden" / "dev" / "steps").glob("*.txt")}
    for relative_path, text in sorted(files.items()):
        assert_matches_golden(relative_path, text)
    if os.environ.get("UPDATE_GOLDEN") != "1":
        assert committed == set(files), "stale or missing golden step files; UPDATE_GOLDEN=1 regenerates them"


def test_kubeadm_config_matches_golden_and_its_api_version(dev_run: StackRun) -> None:
    ((_, env, _),) = split_invocation(dev_run.named(f"{MASTER}-kubeadm-init").input("create"))
    rendered = env["KUBEADM_CONFIG"]
    assert_matches_golden("dev/kubeadm.yaml", rendered)
    documents = list(yaml.safe_load_all(rendered))
    assert tuple(doc["kind"] for doc in documents) == KINDS
    init, cluster, kubelet, proxy = documents
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"]["advertiseAddress"] == "192.168.141.130"
    assert init["nodeRegistration"]["name"] == MASTER
    assert init["nodeRegistration"]["criSocket"] == "unix:///var/run/containerd/containerd.sock"
    assert {"name": "node-ip", "value": "192.168.141.130"} in init["nodeRegistration"]["kubeletExtraArgs"]
    assert "taints" not in init["nodeRegistration"]  # workers exist: the control plane keeps its taint
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12", "dnsDomain": "cluster.local"}
    assert cluster["imageRepository"] == "registry.k8s.io" and cluster["kubernetesVersion"] == "v1.34"
    assert set(cluster["apiServer"]["certSANs"]) == {"192.168.141.130", MASTER}
    assert kubelet["cgroupDriver"] == "systemd" and "failCgroupV1" not in kubelet
    assert proxy["mode"] == "ipvs" and proxy["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1"


def test_calico_pool_is_the_pod_subnet(dev_run: StackRun) -> None:
    ((_, env, _),) = split_invocation(dev_run.named(f"{MASTER}-calico").input("create"))
    installation, api_server = yaml.safe_load_all(env["CALICO_INSTALLATION"])
    (pool,) = installation["spec"]["calicoNetwork"]["ipPools"]
    assert pool["cidr"] == "10.244.0.0/16"
    assert installation["spec"]["calicoNetwork"]["nodeAddressAutodetectionV4"] == {"cidrs": ["192.168.141.0/24"]}
    assert env["CALICO_OPERATOR_URL"].endswith("/v3.31.6/manifests/tigera-operator.yaml")
    assert api_server["kind"] == "APIServer"
    # Workers prepull exactly the images the operator will run, from the registry the Installation names.
    ((_, prepull, _),) = split_invocation(dev_run.named(f"{SLAVE1}-prepull-images").input("create"))
    registry = installation["spec"]["registry"]
    assert registry == "quay.io/" and prepull["EXTRA_IMAGES"].split()[0] == f"{registry}calico/node:v3.31.6"
    assert prepull["IMAGE_REPOSITORY"] == "registry.k8s.io"


def test_options_flow_into_the_steps() -> None:
    run = run_program(
        "dev",
        overrides={
            "kubeProxyMode": "iptables", "mirror": "china", "registryMirrors": ["https://hub.example.com"],
            "kubernetesVersion": "1.35.1", "allowCgroupV1": True, "smokeTest": False,
            "nodes": [{"name": MASTER, "role": "control-plane", "ip": "192.168.141.130"}],
        },
    )  # fmt: skip
    names = set(commands(run))
    assert f"{MASTER}-smoke-test" not in names and not any("join-command" in n and SLAVE1 in n for n in names)
    ((_, env, _),) = split_invocation(run.named(f"{MASTER}-kubeadm-init").input("create"))
    init, cluster, kubelet, proxy = yaml.safe_load_all(env["KUBEADM_CONFIG"])
    assert init["nodeRegistration"]["taints"] == [] and init["nodeRegistration"]["ignorePreflightErrors"] == ["SystemVerification"]
    assert kubelet["failCgroupV1"] is False and proxy["mode"] == "iptables" and "ipvs" not in proxy
    assert cluster["imageRepository"] == "registry.aliyuncs.com/google_containers"
    packages = split_invocation(run.named(f"{MASTER}-kube-packages").input("create"))[0][1]
    assert packages["KUBERNETES_APT_REPO"] == "https://mirrors.aliyun.com/kubernetes-new/core/stable/v1.35/deb/"
    runtime = dict(split_invocation(run.named(f"{MASTER}-container-runtime").input("create"))[1][1])
    assert json.loads(runtime["DOCKER_DAEMON_JSON"])["registry-mirrors"] == ["https://hub.example.com"]
    assert runtime["SANDBOX_IMAGE"] == "registry.aliyuncs.com/google_containers/pause:3.10.1"
    assert runtime["CONTAINERD_REGISTRY_HOSTS"].startswith("docker.io\t")


def test_workers_join_with_a_join_configuration(dev_run: StackRun) -> None:
    ((_, env, _),) = split_invocation(dev_run.named(f"{SLAVE1}-kubeadm-join").input("create"))
    join = yaml.safe_load(env["JOIN_CONFIGURATION"])
    assert join["apiVersion"] == "kubeadm.k8s.io/v1beta4" and join["kind"] == "JoinConfiguration"
    assert join["nodeRegistration"] == {"name": SLAVE1, "criSocket": "unix:///var/run/containerd/containerd.sock"}
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "192.168.141.130:6443"
    assert join["timeouts"] == {"discovery": "5m", "tlsBootstrap": "5m", "kubeletHealthCheck": "4m", "kubernetesAPICall": "1m"}


FAKE_KUBEADM = """#!/bin/sh
# kubeadm for the sandbox: accepts the config it is given and records it
case "$1 $2" in
  "config validate") [ "$3" = --help ] || cp "$4" "$SANDBOX/validated.yaml" ;;
  "join --config") cp "$3" "$SANDBOX/joined.yaml"; mkdir -p "$SANDBOX/etc/kubernetes"; : >"$SANDBOX/etc/kubernetes/kubelet.conf"
                   echo "[discovery] using token abcdef.0123456789abcdef" ;;
  *) exit 1 ;;
esac
"""


def run_join_in_sandbox(tmp_path: Path, create: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """The kubeadm-join text the stack sends, with its /etc/kubernetes and log paths moved into tmp_path and a fake
    kubeadm on PATH: the script's own parsing and file handling run for real, nothing on this machine changes."""
    install_fakes(tmp_path / "bin", {"kubeadm": FAKE_KUBEADM})
    return run_sandboxed(create, tmp_path, tmp_path / "bin", {"SANDBOX": str(tmp_path)}, stdin=stdin)


def test_kubeadm_join_completes_its_configuration_from_stdin(tmp_path: Path, dev_run: StackRun) -> None:
    join_step = dev_run.named(f"{SLAVE1}-kubeadm-join")
    token, ca_hash = "abcdef.0123456789abcdef", "sha256:" + "0" * 64
    result = run_join_in_sandbox(tmp_path, join_step.input("create"), join_step.input("stdin") + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"node {SLAVE1} joined\n"
    joined = yaml.safe_load((tmp_path / "joined.yaml").read_text())
    assert (tmp_path / "validated.yaml").read_text() == (tmp_path / "joined.yaml").read_text()
    assert joined["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "192.168.141.130:6443", "token": token, "caCertHashes": [ca_hash]
    }  # fmt: skip
    assert joined["nodeRegistration"]["name"] == SLAVE1 and joined["timeouts"]["tlsBootstrap"] == "5m"
    log = (tmp_path / "log" / "kubeadm-join.log").read_text()
    assert "<redacted-token>" in log and token not in log and token not in result.stderr
    again = run_join_in_sandbox(tmp_path, join_step.input("create"), "")
    assert again.returncode == 0 and "already joined" in again.stderr


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("kubeadm join 10.0.0.9:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:" + "0" * 64,
         "is for '10.0.0.9:6443', JOIN_CONFIGURATION for '192.168.141.130:6443'"),
        ("kubeadm join 192.168.141.130:6443 --token abcdef.0123456789abcdef", "no --discovery-token-ca-cert-hash"),
        ("kubeadm join 192.168.141.130:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:" + "0" * 64
         + " --control-plane", "unexpected option --control-plane"),
    ],
    ids=["other endpoint", "no CA pinning", "control-plane join"],
)  # fmt: skip
def test_kubeadm_join_refuses_a_bad_join_command(tmp_path: Path, dev_run: StackRun, stdin: str, message: str) -> None:
    result = run_join_in_sandbox(tmp_path, dev_run.named(f"{SLAVE1}-kubeadm-join").input("create"), stdin + "\n")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "abcdef.0123456789abcdef" not in result.stderr and not (tmp_path / "joined.yaml").exists()


def test_without_workers_cluster_ready_waits_for_calico_itself() -> None:
    solo = run_program("dev", overrides={"nodes": [{"name": MASTER, "role": "control-plane", "ip": "192.168.141.130"}]})
    assert depends_on(solo, f"{MASTER}-cluster-ready") == {f"{MASTER}-calico", f"{MASTER}-cluster-hosts"}
