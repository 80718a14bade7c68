"""Calico's operator resources, built as data: the IP pool is the pod subnet, autodetection pinned to the node network."""

from __future__ import annotations

import yaml

from components.config import ClusterConfig
from components.versions import CALICO_REGISTRY


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
    return yaml.safe_dump_all([installation, api_server], sort_keys=False, default_flow_style=False)


def calico_manifest_urls(config: ClusterConfig) -> tuple[str, str]:
    """(operator CRDs, tigera operator) manifests; since Calico 3.30 the CRDs are a separate file."""
    base = config.kubernetes.calico_manifest_url
    return f"{base}/operator-crds.yaml", f"{base}/tigera-operator.yaml"
