"""Calico's operator resources, built as data: the IP pool is the pod subnet, autodetection pinned to the node network."""

from __future__ import annotations

from components.config import ClusterConfig
from components.versions import CALICO_REGISTRY
from components.yaml_io import dump_all


def render_calico_installation(config: ClusterConfig) -> str:
    installation = {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": "default"},
        "spec": {
            "registry": CALICO_REGISTRY,
            "calicoNetwork": {
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
    return dump_all([installation, api_server])


def calico_manifest_urls(config: ClusterConfig) -> tuple[str, str]:
    """(operator CRDs, tigera operator) manifests; since Calico 3.30 the CRDs are a separate file."""
    base = config.kubernetes.calico_manifest_url
    return f"{base}/operator-crds.yaml", f"{base}/tigera-operator.yaml"
