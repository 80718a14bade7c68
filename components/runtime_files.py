"""Container runtime files rendered on the Python side: Docker's daemon.json and containerd's hosts.toml mirrors."""

from __future__ import annotations

import base64
import json

from components.config import KubernetesSpec

DOCKER_HUB = "docker.io"
DOCKER_HUB_UPSTREAM = "https://registry-1.docker.io"


def render_docker_daemon_json(kubernetes: KubernetesSpec) -> str:
    daemon = {
        # Docker and the kubelet must agree on systemd as cgroup driver (the tutorial's daemon.json fix).
        "exec-opts": ["native.cgroupdriver=systemd"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m"},
        "storage-driver": "overlay2",
    }
    if kubernetes.registry_mirrors:
        daemon["registry-mirrors"] = list(kubernetes.registry_mirrors)
    return json.dumps(daemon, indent=2, sort_keys=True) + "\n"


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for the URLs used here (validation guarantees http(s)://...).
    return json.dumps(value)


def render_hosts_toml(upstream: str, mirrors: tuple[str, ...]) -> str:
    """containerd's certs.d/<registry>/hosts.toml: try each mirror for pulls, fall back to the upstream server."""
    lines = [f"server = {_toml_string(upstream)}"]
    for mirror in mirrors:
        lines += ["", f"[host.{_toml_string(mirror)}]", '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def containerd_registry_hosts(kubernetes: KubernetesSpec) -> str:
    """The CONTAINERD_REGISTRY_HOSTS input of configure-container-runtime.sh: `registry<TAB>base64(hosts.toml)` lines."""
    if not kubernetes.registry_mirrors:
        return ""
    hosts = render_hosts_toml(DOCKER_HUB_UPSTREAM, kubernetes.registry_mirrors)
    return f"{DOCKER_HUB}\t{base64.b64encode(hosts.encode()).decode()}"
