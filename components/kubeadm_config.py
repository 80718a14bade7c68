"""The kubeadm configuration of the control plane, built as data (kubeadm.k8s.io/v1beta4) and dumped as YAML."""

from __future__ import annotations

from typing import Any

from components import versions
from components.calico import probe_policy_api
from components.config import ClusterConfig, NodeSpec, TimeoutScale
from components.yaml_io import dump, dump_all

KUBEADM_API = "kubeadm.k8s.io/v1beta4"
CONTAINERD_SOCKET = "unix:///var/run/containerd/containerd.sock"
API_SERVER_PORT = 6443
# Kinds each document of the rendered file must have, in order (checked by the tests).
KINDS = ("InitConfiguration", "ClusterConfiguration", "KubeletConfiguration", "KubeProxyConfiguration")

# kubeadm's own waits (v1beta4 `timeouts`, in InitConfiguration and JoinConfiguration), at their kubeadm defaults in
# seconds, scaled by timeoutScale. Only the fields each command uses: init waits for the control plane's static
# pods, the kubelet and the API server (etcdAPICall: the local etcd member); a worker's join discovers the cluster,
# TLS-bootstraps its kubelet and waits for it. (upgradeManifests is for `kubeadm upgrade`; not used here.)
INIT_TIMEOUTS = {"controlPlaneComponentHealthCheck": 240, "kubeletHealthCheck": 240, "kubernetesAPICall": 60, "etcdAPICall": 120}
JOIN_TIMEOUTS = {"discovery": 300, "tlsBootstrap": 300, "kubeletHealthCheck": 240, "kubernetesAPICall": 60}
# The controller manager's and the scheduler's leader election, at the components' defaults in seconds, scaled by
# timeoutScale. A control plane short of CPU (TCG) answers a lease renewal after the 10 s renew deadline; the
# component then exits ("leaderelection lost") and restarts, and while it is down nothing approves a joining
# kubelet's certificate or creates a Deployment's pods. Measured in the lab at the defaults: the controller manager
# restarted 9 times in 70 min and a worker's TLS bootstrap waited 11 min. Scaled together, the three keep the
# order leader election requires (retry period < renew deadline < lease duration).
LEADER_ELECTION_SECONDS = {"leader-elect-lease-duration": 15, "leader-elect-renew-deadline": 10, "leader-elect-retry-period": 2}
# The API server's own deadlines, at its defaults in seconds, scaled by timeoutScale. /livez includes the etcd
# check, so on a starved control plane a health read slower than 2 s fails the kubelet's liveness probe; eight
# misses and the kubelet kills the API server, whose restart loads the node further (seen in the lab at the
# defaults: once Calico started, the API server went down four times in 16 minutes, etcd timing out its requests).
# request-timeout ends any other request after a minute: in the lab, creating Calico's large CRDs ran past it
# ("http: Handler timeout"), and calico.sh sent the whole manifest again, its work thrown away each time.
API_SERVER_SECONDS = {"request-timeout": 60, "etcd-healthcheck-timeout": 2, "etcd-readycheck-timeout": 2}
# etcd's raft timing, at etcd's defaults in milliseconds (its flags take integers), scaled by timeoutScale. etcd
# fails a request it has not applied within 5 s plus twice the election timeout ("etcdserver: request timed out",
# what the lab's API server got before each kill): scaled, a starved member gets that much longer, ticks less often
# and, alone, never holds an election. The two keep etcd's rule: election timeout >= 5 x heartbeat interval.
ETCD_RAFT_MILLISECONDS = {"heartbeat-interval": 100, "election-timeout": 1000}
# The kubelet's bound on each container-runtime call (KubeletConfiguration runtimeRequestTimeout, default 2 min),
# scaled by timeoutScale. Creating a pod's sandbox includes the CNI plugin's ADD: under TCG, on a loaded worker,
# Calico's took longer than 2 min, so the kubelet gave up, killed the half-made sandbox and started over, again and
# again (lab run 10: one calico-apiserver pod stayed ContainerCreating for 50 minutes, its retries the worker's load).
KUBELET_RUNTIME_REQUEST_SECONDS = 120
# The liveness probe kubeadm gives each control-plane static pod: answer within 15 s, killed after 8 failures 10 s
# apart. kubeadm stretches the startup probe with its own timeouts, never this one, and its config cannot set it.
# Under TCG the API server, busy with Calico's start, failed it: the kubelet killed it, and every client then listed
# everything again at once, so that the new one, too starved to reach itself over TLS, failed a start-up hook and
# exited, again and again (lab run 13). With timeoutScale above 1 a kubeadm patch (InitConfiguration `patches`,
# strategic merge, one file per static pod) scales both numbers.
STATIC_POD_LIVENESS = {"timeoutSeconds": 15, "failureThreshold": 8}
CONTROL_PLANE_STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The readiness probe kubeadm gives etcd, the API server and the scheduler runs every second: etcd's /readyz is a
# linearizable read, the other two are a new HTTPS connection each time (the kubelet's probes keep none open), a
# TLS handshake on both sides. Under TCG that is a steady share of the control plane's CPU spent on a status nobody
# waits for (the API server's endpoints come from its own lease, not its pod's readiness). With timeoutScale above
# 1 the same patch files run it every `timeoutScale` seconds.
STATIC_POD_READINESS = {"periodSeconds": 1}
STATIC_PODS_WITH_READINESS = ("etcd", "kube-apiserver", "kube-scheduler")
# Where kubeadm-init.sh writes the patch files (KUBEADM_PATCHES) for `kubeadm init` to read.
PATCHES_DIR = "/etc/kubernetes/kubeadm-libvirt/patches"
# Under allowCgroupV1 (1.35+ on cgroup v1): the only preflight check the project ever ignores, on init and join.
CGROUP_V1_IGNORED_PREFLIGHT_ERRORS = ("SystemVerification",)
# The worker's token and the CA hash exist only in the join command on the worker's stdin (a secret, minted per
# worker): the rendered JoinConfiguration holds these placeholders, which kubeadm-join.sh replaces on the node.
JOIN_TOKEN_PLACEHOLDER = "JOIN-TOKEN-FROM-STDIN"
CA_CERT_HASH_PLACEHOLDER = "CA-CERT-HASH-FROM-STDIN"


def kubeadm_timeouts(fields: dict[str, int], scale: TimeoutScale) -> dict[str, str]:
    return {field: scale.duration(seconds) for field, seconds in fields.items()}


def _duration_args(flags: dict[str, int], scale: TimeoutScale) -> list[dict[str, str]]:
    """v1beta4 extraArgs ({name, value} items) of duration flags, their defaults in seconds scaled."""
    return [{"name": flag, "value": scale.duration(seconds)} for flag, seconds in flags.items()]


def control_plane_extra_args(scale: TimeoutScale) -> dict[str, list[dict[str, str]]]:
    """The extraArgs timeoutScale stretches, by control-plane static pod (each named as its binary)."""
    return {
        "kube-apiserver": _duration_args(API_SERVER_SECONDS, scale),
        "kube-controller-manager": _duration_args(LEADER_ELECTION_SECONDS, scale),
        "kube-scheduler": _duration_args(LEADER_ELECTION_SECONDS, scale),
        # TimeoutScale.seconds scales any whole amount, rounding up; etcd's flags take milliseconds.
        "etcd": [{"name": flag, "value": str(scale.seconds(ms))} for flag, ms in ETCD_RAFT_MILLISECONDS.items()],
    }


def static_pod_patches(scale: TimeoutScale) -> dict[str, dict[str, Any]]:
    """kubeadm patch file name -> strategic-merge patch of that static pod; none at timeoutScale 1."""
    if not scale.stretched:
        return {}
    liveness = {field: scale.seconds(value) for field, value in STATIC_POD_LIVENESS.items()}
    readiness = {field: scale.seconds(value) for field, value in STATIC_POD_READINESS.items()}

    def probes(pod: str) -> dict[str, Any]:
        return {"livenessProbe": liveness, **({"readinessProbe": readiness} if pod in STATIC_PODS_WITH_READINESS else {})}

    return {f"{pod}+strategic.yaml": {"spec": {"containers": [{"name": pod, **probes(pod)}]}} for pod in CONTROL_PLANE_STATIC_PODS}


def render_static_pod_patches(scale: TimeoutScale) -> str:
    """KUBEADM_PATCHES for kubeadm-init.sh: each patch's YAML after a '# kubeadm patch: FILE' line ("" for none)."""
    return "".join(f"# kubeadm patch: {name}\n{dump(patch)}" for name, patch in static_pod_patches(scale).items())


def api_server_endpoint(config: ClusterConfig) -> str:
    return f"{config.control_plane.ip}:{API_SERVER_PORT}"


def kubeadm_documents(config: ClusterConfig) -> list[dict[str, Any]]:
    kubernetes = config.kubernetes
    control_plane = config.control_plane
    cgroup_v1_opt_in = versions.cgroup_v1_opt_in(kubernetes.allow_cgroup_v1, kubernetes.minor_number)
    node_registration: dict[str, Any] = {
        "name": control_plane.name,
        "criSocket": CONTAINERD_SOCKET,
        # The kubelet must advertise the static address, not whatever interface has the default route.
        "kubeletExtraArgs": [{"name": "node-ip", "value": str(control_plane.ip)}],
    }
    if config.control_plane_schedulable:
        node_registration["taints"] = []  # no workers: let workloads run on the control plane
    if cgroup_v1_opt_in:
        node_registration["ignorePreflightErrors"] = list(CGROUP_V1_IGNORED_PREFLIGHT_ERRORS)
    init: dict[str, Any] = {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": str(control_plane.ip), "bindPort": API_SERVER_PORT},
        "nodeRegistration": node_registration,
        "timeouts": kubeadm_timeouts(INIT_TIMEOUTS, config.timeouts),
    }
    cluster = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        # The node script replaces this with the exact version the package step installed (a minor may be given).
        "kubernetesVersion": f"v{kubernetes.version}",
        "controlPlaneEndpoint": api_server_endpoint(config),
        "imageRepository": kubernetes.image_repository,
        "networking": {
            "podSubnet": str(kubernetes.pod_subnet),
            "serviceSubnet": str(kubernetes.service_subnet),
            "dnsDomain": "cluster.local",
        },
        # The kubeconfig output is used from the host through the static IP; the name helps from inside the lab.
        "apiServer": {"certSANs": [str(control_plane.ip), control_plane.name]},
    }
    if config.timeouts.stretched:  # at timeoutScale 1 they are the defaults: nothing to render
        args = control_plane_extra_args(config.timeouts)
        # calico.py's probe policy needs the API server to serve MutatingAdmissionPolicy (beta in 1.34-1.35: off).
        policy_api = probe_policy_api(config)
        policy_args = [{"name": name, "value": value} for name, value in policy_api.api_server_args] if policy_api else []
        cluster["apiServer"]["extraArgs"] = args["kube-apiserver"] + policy_args
        cluster["controllerManager"] = {"extraArgs": args["kube-controller-manager"]}
        cluster["scheduler"] = {"extraArgs": args["kube-scheduler"]}
        cluster["etcd"] = {"local": {"extraArgs": args["etcd"]}}
        init["patches"] = {"directory": PATCHES_DIR}  # static_pod_patches, written there by kubeadm-init.sh
    kubelet: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
    }
    if config.timeouts.stretched:  # kubeadm uploads it for every node: workers' kubelets get it on join
        kubelet["runtimeRequestTimeout"] = config.timeouts.duration(KUBELET_RUNTIME_REQUEST_SECONDS)
    if cgroup_v1_opt_in:
        kubelet["failCgroupV1"] = False  # KEP-5573: from 1.35 the kubelet refuses cgroup v1 unless told otherwise
    proxy: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": kubernetes.kube_proxy_mode,
    }
    if kubernetes.kube_proxy_mode == "ipvs":
        proxy["ipvs"] = {"scheduler": "rr"}
    return [init, cluster, kubelet, proxy]


def render_kubeadm_config(config: ClusterConfig) -> str:
    return dump_all(kubeadm_documents(config))


def join_configuration(config: ClusterConfig, worker: NodeSpec) -> dict[str, Any]:
    """A worker's `kubeadm join --config` file. A config file rather than flags, because kubeadm's timeouts have
    no flags; kubeadm refuses --config mixed with --token, so the discovery moves into the file too."""
    node_registration: dict[str, Any] = {"name": worker.name, "criSocket": CONTAINERD_SOCKET}
    if versions.cgroup_v1_opt_in(config.kubernetes.allow_cgroup_v1, config.kubernetes.minor_number):
        # kubeadm join runs the same SystemVerification as init, against the worker's own kubelet (>= 1.35
        # refuses cgroup v1): without this, the opt-in would init the control plane and fail every join.
        node_registration["ignorePreflightErrors"] = list(CGROUP_V1_IGNORED_PREFLIGHT_ERRORS)
    return {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "nodeRegistration": node_registration,
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": api_server_endpoint(config),
                "token": JOIN_TOKEN_PLACEHOLDER,
                # Always pinned: kubeadm join never trusts the API server's CA on first sight.
                "caCertHashes": [CA_CERT_HASH_PLACEHOLDER],
            }
        },
        "timeouts": kubeadm_timeouts(JOIN_TIMEOUTS, config.timeouts),
    }


def render_join_configuration(config: ClusterConfig, worker: NodeSpec) -> str:
    return dump(join_configuration(config, worker))
