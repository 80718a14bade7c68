"""Load the ClusterConfig from the running Pulumi program's config: the only place that reads pulumi config."""

from __future__ import annotations

import pulumi

from components.config import ClusterConfig
from components.validation import NAMESPACE, ConfigError, RawConfig, parse_cluster_config

# Every key Pulumi.yaml declares (tests/test_config_validation.py keeps the two lists equal).
CONFIG_KEYS = (
    "nodes", "network", "vcpus", "memoryMiB", "diskGiB", "storagePool", "imageUrl", "sshUser", "sshPublicKey",
    "sshPrivateKey", "kubernetesVersion", "allowCgroupV1", "podSubnet", "serviceSubnet", "kubeProxyMode",
    "calicoVersion", "dockerVersion", "containerdVersion", "mirror", "dockerAptMirror", "kubernetesAptMirror",
    "imageRepository", "registryMirrors", "calicoManifestUrl", "smokeTest", "protectControlPlane", "accelerator",
    "timeoutScale", "calicoRegistry", "registries", "containerRuntimeSource", "osAptSources", "osAptKeyUrl",
    "allowUntestedCalico", "smokeImage", "calicoApiServer",
)  # fmt: skip


class InvalidConfig(pulumi.RunError):
    """The stack config is invalid. A RunError, so the Pulumi CLI prints the message alone; its own type, so the
    command-line entry points (python -m components.plan) can tell it from a failure of the program itself."""


def load_cluster_config() -> ClusterConfig:
    """Read every declared key as the CLI passed it and validate them together (raises ConfigError)."""
    # pulumi.runtime.get_config returns the raw string without Config.get's "use get_secret" warning; the private
    # key never leaves the ClusterConfig except wrapped in Output.secret.
    values = {}
    secret_keys = set()
    for key in CONFIG_KEYS:
        full_key = f"{NAMESPACE}:{key}"
        value = pulumi.runtime.get_config(full_key)
        if value is not None:
            values[key] = value
        if pulumi.runtime.is_config_secret(full_key):
            secret_keys.add(full_key)
    try:
        config = parse_cluster_config(RawConfig(values=values, secret_keys=frozenset(secret_keys)))
    except ConfigError as error:
        # RunError ends the program with the message alone, without a Python traceback around it.
        raise InvalidConfig(str(error)) from None
    if config.kubernetes.untested_calico:
        pulumi.log.warn(config.kubernetes.untested_calico)  # shown by every preview and up, not only the first
    return config
