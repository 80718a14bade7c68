"""Calico's operator resources, built as data: the IP pool is the pod subnet, autodetection pinned to the node network;
and the kustomization that moves the tigera-operator image to calicoRegistry, leaves out the CRDs operator-crds.yaml
already applied (and, on slow hosts, turns off the operator's leader election); on slow hosts, the admission policy
that stretches the probes of the pods the operator starts."""

from __future__ import annotations

from typing import Any

from components.config import ClusterConfig
from components.versions import CALICO_OPERATOR_IMAGE, CALICO_REGISTRY, AdmissionPolicyApi, mutating_admission_policy_api
from components.yaml_io import dump, dump_all

# calico.sh downloads tigera-operator.yaml into a directory under this name, next to the kustomization.
OPERATOR_MANIFEST = "tigera-operator.yaml"
OPERATOR_DEPLOYMENT = {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "tigera-operator", "name": "tigera-operator"}
# tigera-operator.yaml repeats every CRD of operator-crds.yaml (so that it can be applied alone), 1.6 MB of them.
# calico.sh applies operator-crds.yaml first: sending them again makes the API server decode, diff and, on any
# change, rebuild its OpenAPI for each one a second time, which under TCG took minutes (and timed out, run 7). The
# strategic-merge delete drops every CRD the target matches; the name is kustomize's to replace with each match's.
CRDS = {"group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"}
WITHOUT_CRDS = {"$patch": "delete", "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "any"}}
# The operator's leader election has controller-runtime's fixed deadlines (a 15 s lease renewed within 10 s; no flag
# changes them). On a control plane short of CPU a renewal takes longer, and the operator exits ("leader election
# lost") and starts over: in the lab under TCG, twice in 20 minutes, each start minutes of re-reading the
# cluster before it deployed anything. With timeoutScale above 1 the operator runs without it: its manifest runs
# one replica, and a Recreate Deployment stops the old pod before it starts a new one, so two never reconcile at
# once, which is all leader election guarded for it. The flag goes after `command` (JSON6902 appends to it): the
# manifest's own `args`, where it has some, are kept.
OPERATOR_WITHOUT_LEADER_ELECTION = [
    {"op": "add", "path": "/spec/strategy", "value": {"type": "Recreate"}},
    {"op": "add", "path": "/spec/template/spec/containers/0/command/-", "value": "--enable-leader-election=false"},
]


# The operator fixes Calico's probes (the Installation cannot change them, tigera/operator#2169): calico-node's
# liveness probe fails after 3 minutes without an answer (period 60 s, threshold 3, no initial delay), every probe
# gives up after 10 s. Under TCG, calico-node's start-up (its node and IPAM writes through a loaded API server,
# then Felix) took longer than that: the kubelet killed it again and again, and no pod network came up (lab run 11).
# With timeoutScale above 1 a MutatingAdmissionPolicy gives every pod Calico starts a startup probe, the liveness
# probe's own check with an allowance scaled from 5 minutes, and each probe a timeout scaled from 10 s. The kubelet
# runs neither liveness nor readiness before the startup probe succeeds once, so a slow start is waited for and a
# process that hangs later is still restarted. Pods, not the operator's DaemonSets and Deployments, are mutated:
# the operator would put back any change to those.
CALICO_NAMESPACES = ("calico-system", "calico-apiserver")
PROBE_POLICY = "kubeadm-libvirt-calico-probes"
STARTUP_ALLOWANCE_SECONDS = 300
STARTUP_PERIOD_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 10  # the operator's timeoutSeconds on every Calico probe


def probe_policy_api(config: ClusterConfig) -> AdmissionPolicyApi | None:
    """The MutatingAdmissionPolicy API the probe policy is written in: on slow hosts, for minors that serve one."""
    if not config.timeouts.stretched:
        return None
    return mutating_admission_policy_api(config.kubernetes.minor_number)


def stretched_probes(config: ClusterConfig) -> tuple[int, int]:
    """(the startup probe's failureThreshold, every probe's timeoutSeconds) at the stack's timeoutScale."""
    scale = config.timeouts
    return scale.seconds(STARTUP_ALLOWANCE_SECONDS // STARTUP_PERIOD_SECONDS), scale.seconds(PROBE_TIMEOUT_SECONDS)


def _probe_patches(config: ClusterConfig) -> str:
    """The JSON patches, as CEL: the first container (every Calico pod has one; the match conditions check it)."""
    failures, timeout = stretched_probes(config)

    def add(path: str, value: object) -> str:
        return f'JSONPatch{{op: "add", path: "/spec/containers/0/{path}", value: {value}}}'

    startup = [
        add("startupProbe", "object.spec.containers[0].livenessProbe"),
        add("startupProbe/periodSeconds", STARTUP_PERIOD_SECONDS),
        add("startupProbe/failureThreshold", failures),
        add("startupProbe/timeoutSeconds", timeout),
        add("livenessProbe/timeoutSeconds", timeout),
    ]
    readiness = add("readinessProbe/timeoutSeconds", timeout)
    return (
        "[\n  " + ",\n  ".join(startup) + "\n] + (has(object.spec.containers[0].readinessProbe) ? [\n  " + readiness + "\n] : [])"
    )


def calico_probe_policy(config: ClusterConfig) -> list[dict[str, Any]]:
    """The policy and its binding, or nothing (timeoutScale 1, or a minor without the API)."""
    api = probe_policy_api(config)
    if api is None:
        return []
    policy = {
        "apiVersion": api.api_version,
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": PROBE_POLICY},
        "spec": {
            "matchConstraints": {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(CALICO_NAMESPACES)}]
                },
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            },
            "matchConditions": [
                {
                    "name": "first-container-has-a-liveness-probe-and-no-startup-probe",
                    "expression": "size(object.spec.containers) > 0 && has(object.spec.containers[0].livenessProbe)"
                    " && !has(object.spec.containers[0].startupProbe)",
                }
            ],
            # A policy that cannot apply leaves the pod as the operator made it rather than refusing it.
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": _probe_patches(config)}}],
        },
    }
    binding = {
        "apiVersion": api.api_version,
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": PROBE_POLICY},
        "spec": {"policyName": PROBE_POLICY},
    }
    return [policy, binding]


def render_calico_installation(config: ClusterConfig) -> str:
    installation = {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": "default"},
        "spec": {
            "registry": config.kubernetes.calico_registry,  # every image the operator deploys
            # The flexvolume and CSI drivers serve only Calico's application-layer policy (Dikastes, Istio), which
            # this cluster does not install: off, they are two images and a DaemonSet fewer on every node.
            "flexVolumePath": "None",
            "kubeletVolumePluginPath": "None",
            # The operator gives calico-node no resources, so it runs BestEffort: the kubelet's cgroups then give
            # it CPU only when no Burstable pod wants any. On a busy control plane (all static pods are Burstable)
            # that starved its start-up, whose API requests have a hard-coded 2 s timeout (run 7, under TCG).
            # Calico's own manifest install requests the same 250m for it.
            "calicoNodeDaemonSet": {
                "spec": {"template": {"spec": {"containers": [{"name": "calico-node", "resources": {"requests": {"cpu": "250m"}}}]}}}
            },
            "calicoNetwork": {
                # VXLAN needs no BGP: Felix programs the routes itself (Calico's own VXLAN manifests do the same).
                # Off, calico-node runs no BIRD/confd and its readiness does not wait for BGP peerings.
                "bgp": "Disabled",
                "ipPools": [
                    {
                        "name": "default-ipv4-ippool",
                        "cidr": str(config.kubernetes.pod_subnet),  # equal to kubeadm's podSubnet
                        "encapsulation": "VXLANCrossSubnet",
                        "natOutgoing": "Enabled",
                        "nodeSelector": "all()",
                    }
                ],
                # On hosts with more than one interface firstFound can pick the wrong one; the node network is known.
                "nodeAddressAutodetectionV4": {"cidrs": [str(config.network.cidr)]},
            }
        },
    }
    api_server = {"apiVersion": "operator.tigera.io/v1", "kind": "APIServer", "metadata": {"name": "default"}, "spec": {}}
    # The policy first: it must be in place before the operator's DaemonSets create their pods.
    return dump_all([*calico_probe_policy(config), installation, *([api_server] if config.kubernetes.calico_api_server else [])])


def calico_manifest_urls(config: ClusterConfig) -> tuple[str, str]:
    """(operator CRDs, tigera operator) manifests; since Calico 3.30 the CRDs are a separate file."""
    base = config.kubernetes.calico_manifest_url
    return f"{base}/operator-crds.yaml", f"{base}/tigera-operator.yaml"


def operator_image(config: ClusterConfig) -> str:
    """The operator image's name (no tag) after the rewrite: calicoRegistry, then the manifest's own path."""
    return f"{config.kubernetes.calico_registry}{CALICO_OPERATOR_IMAGE}"


def render_operator_kustomization(config: ClusterConfig) -> str:
    """kustomize's images transformer rewrites the registry of the operator's image and keeps the manifest's tag:
    the manifest is applied as downloaded otherwise (but for its CRDs and, on slow hosts, the leader election
    above), and the tag stays the one its Calico release chose."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [OPERATOR_MANIFEST],
        "images": [{"name": f"{CALICO_REGISTRY}{CALICO_OPERATOR_IMAGE}", "newName": operator_image(config)}],
        "patches": [{"target": CRDS, "patch": dump(WITHOUT_CRDS)}],
    }
    if config.timeouts.stretched:
        kustomization["patches"].append({"target": OPERATOR_DEPLOYMENT, "patch": dump(OPERATOR_WITHOUT_LEADER_ELECTION)})
    return dump(kustomization)
