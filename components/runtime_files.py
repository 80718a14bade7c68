"""Container runtime files rendered on the Python side: Docker's daemon.json, containerd's certs.d hosts.toml files
(Docker Hub mirrors, plain-HTTP and private-CA registries) and the registries' CA certificates.

Documents are built as data and dumped (json, tomli_w), never assembled as text.
"""

from __future__ import annotations

import base64
import json

import tomli_w

from components.config import KubernetesSpec, RegistrySpec

DOCKER_HUB = "docker.io"
DOCKER_HUB_UPSTREAM = "https://registry-1.docker.io"
# containerd's config_path (configure-container-runtime.sh sets it): certs.d/<host[:port]>/hosts.toml, and ca.crt next to it.
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"


def render_docker_daemon_json(kubernetes: KubernetesSpec) -> str:
    daemon: dict[str, object] = {
        # Docker and the kubelet must agree on systemd as cgroup driver (the tutorial's daemon.json fix).
        "exec-opts": ["native.cgroupdriver=systemd"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m"},
        "storage-driver": "overlay2",
    }
    if kubernetes.registry_mirrors:
        daemon["registry-mirrors"] = list(kubernetes.registry_mirrors)
    insecure = [registry.host for registry in kubernetes.registries if registry.plain_http]
    if insecure:
        # Docker's switch for plain HTTP (a CA goes to /etc/docker/certs.d/<host>/ca.crt instead).
        daemon["insecure-registries"] = insecure
    return json.dumps(daemon, indent=2, sort_keys=True) + "\n"


def render_hosts_toml(upstream: str, mirrors: tuple[str, ...]) -> str:
    """containerd's certs.d/<registry>/hosts.toml: try each mirror for pulls, fall back to the upstream server."""
    document: dict[str, object] = {"server": upstream}
    if mirrors:
        document["host"] = {mirror: {"capabilities": ["pull", "resolve"]} for mirror in mirrors}
    return tomli_w.dumps(document)


def render_registry_hosts_toml(registry: RegistrySpec) -> str:
    """certs.d/<host>/hosts.toml of a private registry: its server over plain HTTP, or over HTTPS trusting its CA
    (the CA file is written next to hosts.toml). The server is also spelled out as a [host] entry: containerd 1.6
    (Debian 12's) ignores a plain-HTTP `server` alone and resolves over HTTPS (found in the lab's cluster run)."""
    url = f"http://{registry.host}" if registry.plain_http else f"https://{registry.host}"
    entry: dict[str, object] = {"capabilities": ["pull", "resolve"]}
    if not registry.plain_http:
        entry["ca"] = f"{CONTAINERD_CERTS_D}/{registry.host}/ca.crt"
    return tomli_w.dumps({"server": url, "host": {url: entry}})


def _records(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"{name}\t{base64.b64encode(text.encode()).decode()}" for name, text in pairs)


def containerd_registry_hosts(kubernetes: KubernetesSpec) -> str:
    """The CONTAINERD_REGISTRY_HOSTS input of configure-container-runtime.sh: `registry<TAB>base64(hosts.toml)` lines."""
    pairs = []
    if kubernetes.registry_mirrors:
        pairs.append((DOCKER_HUB, render_hosts_toml(DOCKER_HUB_UPSTREAM, kubernetes.registry_mirrors)))
    pairs += [(registry.host, render_registry_hosts_toml(registry)) for registry in kubernetes.registries]
    return _records(pairs)


def registry_ca_certs(kubernetes: KubernetesSpec) -> str:
    """The REGISTRY_CA_CERTS input: `registry<TAB>base64(PEM)` lines, for containerd's and Docker's certs.d."""
    return _records([(registry.host, registry.ca_cert) for registry in kubernetes.registries if registry.ca_cert])
