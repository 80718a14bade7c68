"""What each remote step runs: the node scripts with their inputs, rendered as the exact shell command sent over SSH.

Pure functions of the ClusterConfig. A script is sent whole in the command (`bash -c '<script>'`), so a change to
a script changes the `create` input of exactly the steps that run it, and `pulumi preview` shows the change.
Inputs go in as environment variables on the sudo command line; secrets never do (they arrive on stdin).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.calico import calico_manifest_urls, operator_image, render_calico_installation, render_operator_kustomization
from components.config import ClusterConfig, NodeSpec
from components.join_token import join_token_id
from components.kubeadm_config import render_join_configuration, render_kubeadm_config, render_static_pod_patches
from components.runtime_files import containerd_registry_hosts, registry_ca_certs, render_docker_daemon_json
from components.versions import calico_node_images, kubernetes_apt_repository, minimum_containerd, pause_tag

SCRIPT_DIR = Path(__file__).resolve().parent / "scripts"

# Bounds of the waits inside the scripts at timeoutScale 1, in seconds; every step passes them scaled
# (ClusterConfig.timeouts), as *_TIMEOUT_SECONDS inputs. The Command timeouts (kubeadm_cluster.py) are larger.
BOOT_TIMEOUT = 900
INIT_TIMEOUT = 900
CALICO_TIMEOUT = 900
JOIN_TIMEOUT = 600
READY_TIMEOUT = 900
SMOKE_TIMEOUT = 300
PULL_TIMEOUT = 900
DRAIN_TIMEOUT = 120
APT_LOCK_TIMEOUT = 300  # another apt/dpkg (unattended-upgrades) holding the locks
RUNTIME_READY_TIMEOUT = 60  # containerd answering after a (re)start
RESET_TIMEOUT = 300  # kubeadm reset on a worker being replaced
INIT_API_WAIT_TIMEOUT = 120  # an initialised API server answering again, e.g. after a reboot
DRAIN_API_WAIT_TIMEOUT = 60  # a delete hook must not hold up a destroy of a broken cluster for long

TOKEN_API_WAIT_TIMEOUT = 60  # the API server answering a token step, e.g. right after a control-plane reboot

# Not scripts: one command each, with nothing to guard. The stack output's token, for a human joining a machine
# by hand, has kubeadm's default lifetime (24 h). A worker's own token is a script (join_token, below).
READ_KUBECONFIG = "sudo cat /etc/kubernetes/admin.conf"
STACK_JOIN_COMMAND = "sudo kubeadm token create --print-join-command"


# Shared shell functions (logging, input checks, idempotent file writes, bounded apt-lock waits), sent ahead of
# every script: a step is one self-contained text, with nothing to upload first.
SCRIPT_LIBRARY = "lib/common.sh"


@functools.cache
def script_text(name: str) -> str:
    """The text a step runs: the shared library, then the script (shellcheck lints exactly this concatenation)."""
    library = SCRIPT_DIR / SCRIPT_LIBRARY
    prefix = library.read_text() + "\n" if library.exists() else ""
    return prefix + (SCRIPT_DIR / name).read_text()


def invocation(config: ClusterConfig, script: str, env: Mapping[str, str]) -> str:
    """Every script also gets TIMEOUT_SCALE_PERCENT: lib/common.sh's `scaled` applies it to the short per-call
    bounds inside the scripts (kubectl --request-timeout, curl, timeout -k grace), so they stretch with the rest."""
    env = {**env, "TIMEOUT_SCALE_PERCENT": str(config.timeouts.percent)}
    return command_line(script.removesuffix(".sh"), env, script_text(script))


def bound(config: ClusterConfig, base_seconds: int) -> str:
    """A wait's bound for a script input: its base scaled by timeoutScale, in whole seconds."""
    return str(config.timeouts.seconds(base_seconds))


def command_line(step: str, env: Mapping[str, str], text: str) -> str:
    """`sudo env K=V ... bash -c '<library + script>' <step>`: every value quoted; $0 names the step."""
    assignments = "".join(f"{key}={shlex.quote(value)} " for key, value in env.items())
    return f"sudo env {assignments}bash -c {shlex.quote(text)} {step}"


def cluster_hosts(config: ClusterConfig) -> str:
    return "\n".join(f"{node.ip} {node.name}" for node in config.nodes)


def wait_for_boot(config: ClusterConfig) -> str:
    return invocation(config, "wait-for-boot.sh", {"BOOT_TIMEOUT_SECONDS": bound(config, BOOT_TIMEOUT)})


def os_apt_sources(config: ClusterConfig) -> str:
    return invocation(
        config,
        "os-apt-sources.sh",
        {
            "OS_APT_SOURCES": "\n".join(config.os_apt.sources),
            "OS_APT_KEY_URL": config.os_apt.key_url,
            "APT_LOCK_TIMEOUT_SECONDS": bound(config, APT_LOCK_TIMEOUT),
        },
    )


def os_prep(config: ClusterConfig) -> str:
    """The OS archive first (os-prep installs packages from it), then the host prerequisites. Two scripts, one
    step: each file keeps one concern, and the graph (and its critical path) keeps its shape."""
    prerequisites = invocation(
        config,
        "os-prep.sh",
        {"KUBE_PROXY_MODE": config.kubernetes.kube_proxy_mode, "APT_LOCK_TIMEOUT_SECONDS": bound(config, APT_LOCK_TIMEOUT)},
    )
    return f"{os_apt_sources(config)} && {prerequisites}"


def hosts_file(config: ClusterConfig) -> str:
    """Its own step: adding a node changes only this small step on the other nodes, not os-prep."""
    return invocation(config, "cluster-hosts.sh", {"CLUSTER_HOSTS": cluster_hosts(config)})


def sandbox_image(config: ClusterConfig) -> str:
    kubernetes = config.kubernetes
    return f"{kubernetes.image_repository}/pause:{pause_tag(kubernetes.minor_number)}"


def install_container_runtime(config: ClusterConfig) -> str:
    """Only the inputs of the chosen source: os-archive ignores Docker's repository and versions."""
    kubernetes = config.kubernetes
    source: dict[str, str]
    if kubernetes.container_runtime_source == "os-archive":
        # The node checks its archive's containerd against the minor's floor; validation can only for known images.
        source = {"CONTAINERD_MIN_VERSION": minimum_containerd(kubernetes.minor_number)}
    else:
        source = {
            "DOCKER_APT_REPO": kubernetes.docker_apt_mirror,
            "DOCKER_VERSION": kubernetes.docker_version,
            "CONTAINERD_VERSION": kubernetes.containerd_version,
        }
    return invocation(
        config,
        "install-container-runtime.sh",
        {
            "CONTAINER_RUNTIME_SOURCE": kubernetes.container_runtime_source,
            **source,
            "APT_LOCK_TIMEOUT_SECONDS": bound(config, APT_LOCK_TIMEOUT),
        },
    )


def configure_container_runtime(config: ClusterConfig, with_docker: bool = True) -> str:
    return invocation(
        config,
        "configure-container-runtime.sh",
        {
            "SANDBOX_IMAGE": sandbox_image(config),
            "DOCKER_DAEMON_JSON": render_docker_daemon_json(config.kubernetes) if with_docker else "",
            "CONTAINERD_REGISTRY_HOSTS": containerd_registry_hosts(config.kubernetes),
            "REGISTRY_CA_CERTS": registry_ca_certs(config.kubernetes),
            "RUNTIME_READY_TIMEOUT_SECONDS": bound(config, RUNTIME_READY_TIMEOUT),
        },
    )


def container_runtime(config: ClusterConfig) -> str:
    return f"{install_container_runtime(config)} && {configure_container_runtime(config)}"


def kube_packages(config: ClusterConfig, node: NodeSpec) -> str:
    kubernetes = config.kubernetes
    return invocation(
        config,
        "install-kube-packages.sh",
        {
            "KUBERNETES_APT_REPO": kubernetes_apt_repository(kubernetes.kubernetes_apt_mirror, kubernetes.minor),
            "KUBERNETES_VERSION": kubernetes.version,
            "NODE_IP": str(node.ip),
            "APT_LOCK_TIMEOUT_SECONDS": bound(config, APT_LOCK_TIMEOUT),
        },
    )


def prepull_images(config: ClusterConfig) -> str:
    return invocation(
        config,
        "prepull-images.sh",
        {
            "IMAGE_REPOSITORY": config.kubernetes.image_repository,
            "EXTRA_IMAGES": " ".join(calico_node_images(config.kubernetes.calico_registry, config.kubernetes.calico_version)),
            "PULL_TIMEOUT_SECONDS": bound(config, PULL_TIMEOUT),
        },
    )


def kubeadm_init(config: ClusterConfig) -> str:
    return invocation(
        config,
        "kubeadm-init.sh",
        {
            "KUBEADM_CONFIG": render_kubeadm_config(config),
            "KUBEADM_PATCHES": render_static_pod_patches(config.timeouts),
            "KUBE_USER": config.ssh.user,
            "INIT_TIMEOUT_SECONDS": bound(config, INIT_TIMEOUT),
            "API_WAIT_TIMEOUT_SECONDS": bound(config, INIT_API_WAIT_TIMEOUT),
        },
    )


def calico(config: ClusterConfig) -> str:
    crds, operator = calico_manifest_urls(config)
    return invocation(
        config,
        "calico.sh",
        {
            "CALICO_OPERATOR_CRDS_URL": crds,
            "CALICO_OPERATOR_URL": operator,
            "CALICO_OPERATOR_KUSTOMIZATION": render_operator_kustomization(config),
            "CALICO_OPERATOR_IMAGE": operator_image(config),
            "CALICO_INSTALLATION": render_calico_installation(config),
            "CALICO_TIMEOUT_SECONDS": bound(config, CALICO_TIMEOUT),
        },
    )


def join_token(config: ClusterConfig, worker: NodeSpec, action: str) -> str:
    """The worker's bootstrap token on the control plane, under the id derived from its name (join_token.py).

    `mint` prints the join command (a secret) for the worker's kubeadm-join: the token has no expiry, so a join
    retried any time later still works. `delete` removes it once the worker has joined (reading the join command
    the worker got on stdin, to check it deletes that token); `delete-if-reachable` is the delete hook for a worker
    removed before it joined, which must not block a destroy when the API server is down.
    """
    return invocation(
        config,
        "join-token.sh",
        {
            "TOKEN_ACTION": action,
            "TOKEN_ID": join_token_id(worker.name),
            "NODE_NAME": worker.name,
            "API_WAIT_TIMEOUT_SECONDS": bound(config, TOKEN_API_WAIT_TIMEOUT),
        },
    )


def kubeadm_join(config: ClusterConfig, worker: NodeSpec, token_step: str) -> str:
    """Reads the join command (a secret) from stdin; its token and CA hash complete JOIN_CONFIGURATION on the node.
    `token_step` names the control-plane step that minted the token, for the message when the token is refused."""
    return invocation(
        config,
        "kubeadm-join.sh",
        {
            "NODE_NAME": worker.name,
            "JOIN_CONFIGURATION": render_join_configuration(config, worker),
            "JOIN_TIMEOUT_SECONDS": bound(config, JOIN_TIMEOUT),
            "JOIN_TOKEN_STEP": token_step,
        },
    )


def node_ready(config: ClusterConfig, worker: NodeSpec) -> str:
    return invocation(
        config, "node-ready.sh", {"NODE_NAME": worker.name, "READY_TIMEOUT_SECONDS": bound(config, READY_TIMEOUT)}
    )


def reset_node(config: ClusterConfig) -> str:
    return invocation(
        config, "reset-node.sh", {"KUBE_USER": config.ssh.user, "RESET_TIMEOUT_SECONDS": bound(config, RESET_TIMEOUT)}
    )


def drain_node(config: ClusterConfig, worker: NodeSpec, domain_uuid: str) -> str:
    """`domain_uuid`: the libvirt UUID of the worker's VM when its membership was made, which the VM's kubelet reports
    as the Node's system UUID: the hook leaves alone a Node that another VM of the same name has joined since."""
    return invocation(
        config,
        "drain-node.sh",
        {
            "NODE_NAME": worker.name,
            "NODE_SYSTEM_UUID": domain_uuid,
            "DRAIN_TIMEOUT_SECONDS": bound(config, DRAIN_TIMEOUT),
            "API_WAIT_TIMEOUT_SECONDS": bound(config, DRAIN_API_WAIT_TIMEOUT),
        },
    )


def cluster_ready(config: ClusterConfig) -> str:
    return invocation(
        config,
        "cluster-ready.sh",
        {
            "EXPECTED_NODES": " ".join(node.name for node in config.nodes),
            "READY_TIMEOUT_SECONDS": bound(config, READY_TIMEOUT),
        },
    )


def smoke_test(config: ClusterConfig) -> str:
    return invocation(
        config,
        "smoke-test.sh",
        {
            "SMOKE_IMAGE": config.kubernetes.smoke_image,
            "NODE_IPS": " ".join(str(node.ip) for node in config.nodes),
            "SMOKE_TIMEOUT_SECONDS": bound(config, SMOKE_TIMEOUT),
        },
    )


@dataclass(frozen=True)
class NodeCommands:
    """The commands every node runs with the same text: rendered once per cluster, not once per node (the hosts
    list alone is as long as the cluster, so rendering it per node would make a preview quadratic in nodes)."""

    wait_for_boot: str
    hosts_file: str
    os_prep: str
    container_runtime: str
    prepull_images: str
    reset_node: str


def node_commands(config: ClusterConfig) -> NodeCommands:
    return NodeCommands(
        wait_for_boot=wait_for_boot(config),
        hosts_file=hosts_file(config),
        os_prep=os_prep(config),
        container_runtime=container_runtime(config),
        prepull_images=prepull_images(config),
        reset_node=reset_node(config),
    )
