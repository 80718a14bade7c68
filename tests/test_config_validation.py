"""Every validation rule: one bad value in, one clear problem out (key, value, fix), all problems at once."""

from __future__ import annotations

import json

import pulumi
import pytest

from components.mockrun import run_program
from components.project_files import declared_keys, merged_config
from components.stack_config import CONFIG_KEYS
from components.validation import ConfigError, RawConfig, parse_cluster_config

DEV_NODES = json.loads(merged_config("dev")["kubeadm-libvirt:nodes"])


def dev_values(**overrides: object) -> dict[str, str]:
    """The dev stack's merged config (short keys), with overrides encoded as the CLI would."""
    merged = merged_config("dev", overrides)
    return {key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("kubeadm-libvirt:")}


def problems_for(secret_keys: frozenset[str] = frozenset(), **overrides: object) -> list[str]:
    try:
        parse_cluster_config(RawConfig(dev_values(**overrides), secret_keys))
    except ConfigError as error:
        return error.problems
    return []


def with_node(index: int, **changes: object) -> list[dict]:
    nodes = [dict(node) for node in DEV_NODES]
    nodes[index].update(changes)
    return [{k: v for k, v in node.items() if v is not None} for node in nodes]


def test_declared_keys_match_what_the_program_reads() -> None:
    assert declared_keys() == set(CONFIG_KEYS)


def test_dev_stack_is_valid() -> None:
    config = parse_cluster_config(RawConfig(dev_values()))
    assert [node.name for node in config.nodes] == ["kubernetes-master", "kubernetes-slave1", "kubernetes-slave2"]
    assert config.control_plane.name == "kubernetes-master"
    assert str(config.network.gateway) == "192.168.141.1"
    assert [str(server) for server in config.network.nameservers] == ["192.168.141.1"]
    assert all(node.vcpus == 2 and node.memory_mib == 2048 and node.disk_gib == 20 for node in config.nodes)
    assert config.ssh.generates_key_pair


def test_a_worker_may_have_one_vcpu_since_kubeadm_join_checks_no_cpu_count() -> None:
    config = parse_cluster_config(RawConfig(dev_values(nodes=with_node(2, vcpus=1))))
    assert [node.vcpus for node in config.nodes] == [2, 2, 1]


CASES = [
    # (id, overrides, expected fragments of one problem)
    ("malformed ip", {"nodes": with_node(1, ip="192.168.141.300")}, ["nodes[1].ip", "'192.168.141.300'", "not an IPv4 address"]),
    ("malformed cidr", {"network": {"cidr": "192.168.141.0/33"}}, ["network.cidr", "not an IPv4 subnet"]),
    ("cidr with host bits", {"network": {"cidr": "192.168.141.5/24"}}, ["network.cidr", "host bits zero"]),
    ("ip outside cidr", {"nodes": with_node(2, ip="10.1.2.3")}, ["nodes[2].ip", "outside network.cidr 192.168.141.0/24"]),
    ("network address", {"nodes": with_node(1, ip="192.168.141.0")}, ["nodes[1].ip", "network or broadcast"]),
    ("broadcast address", {"nodes": with_node(1, ip="192.168.141.255")}, ["nodes[1].ip", "network or broadcast"]),
    ("gateway address", {"nodes": with_node(1, ip="192.168.141.1")}, ["nodes[1].ip", "is the gateway"]),
    ("duplicate name", {"nodes": with_node(2, name="kubernetes-slave1")}, ["'kubernetes-slave1' is the name of 2 nodes"]),
    ("duplicate ip", {"nodes": with_node(2, ip="192.168.141.131")}, ["'192.168.141.131' is the IP of 2 nodes"]),
    ("duplicate mac", {"nodes": [dict(n, mac="52:54:00:00:00:01") for n in DEV_NODES]}, ["'52:54:00:00:00:01' is the MAC of 3 nodes"]),
    ("bad mac", {"nodes": with_node(0, mac="01:00:5e:00:00:01")}, ["nodes[0].mac", "not a unicast MAC"]),
    ("uppercase name", {"nodes": with_node(1, name="Worker1")}, ["nodes[1].name", "'Worker1'", "not a valid hostname"]),
    ("name with dot", {"nodes": with_node(1, name="worker.lab")}, ["nodes[1].name", "not a valid hostname"]),
    ("no control plane", {"nodes": with_node(0, role="worker")}, ["'0 control planes'", "exactly one node role: control-plane"]),
    ("two control planes", {"nodes": with_node(1, role="control-plane")}, ["'2 control planes'"]),
    ("unknown role", {"nodes": with_node(1, role="master")}, ["nodes[1].role", "'master'", "control-plane, worker"]),
    ("unknown node key", {"nodes": with_node(1, cpus=4)}, ["nodes[1].cpus", "not a known node key"]),
    ("missing ip", {"nodes": with_node(1, ip=None)}, ["nodes[1].ip", "is missing"]),
    ("string vcpus", {"nodes": with_node(1, vcpus="4")}, ["nodes[1].vcpus", "'4' is a string, not a number"]),
    ("bool vcpus", {"nodes": with_node(1, vcpus=True)}, ["nodes[1].vcpus", "not a whole number"]),
    ("control-plane vcpus < 2", {"nodes": with_node(0, vcpus=1)}, ["nodes[0].vcpus", "below 2", "kubeadm's preflight"]),
    ("worker vcpus < 1", {"nodes": with_node(1, vcpus=0)}, ["nodes[1].vcpus", "0 is below 1", "a worker needs 1"]),
    ("node memory < 2048", {"nodes": with_node(1, memoryMiB=1024)}, ["nodes[1].memoryMiB", "below 2048"]),
    ("node disk < 20", {"nodes": with_node(1, diskGiB=10)}, ["nodes[1].diskGiB", "below 20"]),
    ("default vcpus < 2", {"vcpus": "1"}, ["vcpus: 1 is below 2"]),
    ("default memory not a number", {"memoryMiB": "2GiB"}, ["memoryMiB: '2GiB' is not a whole number"]),
    ("default disk < 20", {"diskGiB": "8"}, ["diskGiB: 8 is below 20"]),
    ("nodes not a list", {"nodes": {"name": "x"}}, ["nodes:", "is not a list"]),
    # Two names whose derived join token ids collide (found by search): one token would replace the other's.
    ("shared join token id", {"nodes": [DEV_NODES[0], {"name": "w2415", "role": "worker", "ip": "192.168.141.140"},
                                        {"name": "w7093", "role": "worker", "ip": "192.168.141.141"}]},
     ["nodes: 'w2415 and w7093' derive the same join token id '2n7902'", "rename one of these workers"]),
    ("unknown network key", {"network": {"cidr": "192.168.141.0/24", "dhcp": True}}, ["network.dhcp", "not a known key"]),
    ("gateway outside", {"network": {"cidr": "192.168.141.0/24", "gateway": "10.0.0.1"}}, ["network.gateway", "not a host address"]),
    ("bad nameserver", {"network": {"cidr": "192.168.141.0/24", "nameservers": ["dns.example"]}}, ["network.nameservers[0]", "not an IPv4 address"]),
    ("bad public key", {"sshPublicKey": "not-a-key", "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}, ["sshPublicKey", "not an OpenSSH public key"]),
    ("public key type", {"sshPublicKey": "ssh-foo AAAA", "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}, ["sshPublicKey", "unknown key type 'ssh-foo'"]),
    ("public key without private", {"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVmZmVjdGl2ZWx5LWEtdGVzdC1rZXktYm9keS0zMmI="}, ["sshPrivateKey", "is empty while sshPublicKey is set"]),
    ("private without public", {"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}, ["sshPublicKey", "is empty while sshPrivateKey is set"]),
    ("root user", {"sshUser": "root"}, ["sshUser: 'root' cannot be root"]),
    ("bool as string", {"smokeTest": "yes"}, ["smokeTest: 'yes' is not a boolean"]),
    ("version malformed", {"kubernetesVersion": "v1.34"}, ["kubernetesVersion: 'v1.34' is not a Kubernetes version"]),
    ("version unsupported", {"kubernetesVersion": "1.29"}, ["kubernetesVersion: '1.29' is outside the supported"]),
    ("1.35 without opt-in", {"kubernetesVersion": "1.35", "calicoVersion": "3.31.6"}, ["refuses cgroup v1", "allowCgroupV1 true"]),
    ("1.36 on bionic", {"kubernetesVersion": "1.36.1", "calicoVersion": "3.32.0"}, ["cannot run on this image"]),
    ("calico outside matrix", {"calicoVersion": "3.33.0"}, ["calicoVersion: '3.33.0' supports Kubernetes 1.35-1.37, not 1.34"]),
    ("calico unknown", {"calicoVersion": "3.20.0"}, ["calicoVersion", "outside the supported Calico releases"]),
    ("calico untested", {"calicoVersion": "3.28.1"}, ["calicoVersion: '3.28.1' supports Kubernetes 1.27-1.30, not 1.34", "set allowUntestedCalico true"]),
    ("unknown calico even if untested allowed", {"calicoVersion": "3.20.0", "allowUntestedCalico": "true"}, ["calicoVersion", "outside the supported Calico releases"]),
    ("smoke image URL", {"smokeImage": "https://registry.lab/nginx"}, ["smokeImage: 'https://registry.lab/nginx' is not valid", "docker.io/library/nginx:1.27-alpine"]),
    ("pod overlaps nodes", {"podSubnet": "192.168.0.0/16"}, ["podSubnet: '192.168.0.0/16' overlaps network.cidr"]),
    ("service overlaps pods", {"serviceSubnet": "10.244.0.0/16"}, ["serviceSubnet: '10.244.0.0/16' overlaps podSubnet"]),
    ("service too small", {"serviceSubnet": "10.96.0.0/28"}, ["serviceSubnet: '10.96.0.0/28' is too small"]),
    ("service too large", {"serviceSubnet": "10.0.0.0/8"}, ["larger than the API server accepts"]),
    ("pod subnet too small", {"podSubnet": "10.244.0.0/25"}, ["podSubnet", "holds 0 node /24 blocks for 3 nodes"]),
    ("unknown mirror", {"mirror": "europe"}, ["mirror: 'europe' is not a known value", "global, china"]),
    ("unknown proxy mode", {"kubeProxyMode": "nftables"}, ["kubeProxyMode: 'nftables'", "ipvs, iptables"]),
    ("bad registry mirror", {"registryMirrors": ["mirror.example.com"]}, ["registryMirrors[0]", "not an http(s) URL"]),
    ("bad docker version", {"dockerVersion": "latest"}, ["dockerVersion: 'latest' is not a version"]),
    ("docker mirror names a distribution", {"dockerAptMirror": "https://download.docker.com/linux/ubuntu"}, ["dockerAptMirror", "names one distribution's repository", "e.g. https://download.docker.com/linux"]),
    ("unknown accelerator", {"accelerator": "hvf"}, ["accelerator: 'hvf' is not a known value", "kvm, tcg"]),
    ("timeout scale below 1", {"timeoutScale": "0.5"}, ["timeoutScale: '0.5' is below 1", "from 1 to 20"]),
    ("timeout scale above 20", {"timeoutScale": "25"}, ["timeoutScale: '25' is above 20"]),
    ("timeout scale not a number", {"timeoutScale": "fast"}, ["timeoutScale: 'fast' is not a number"]),
    ("timeout scale too precise", {"timeoutScale": "1.125"}, ["timeoutScale: '1.125' is not a number", "at most two decimals"]),
    ("image relative path", {"imageUrl": "images/jammy.qcow2"}, ["imageUrl: 'images/jammy.qcow2' is a relative path", "use an absolute path"]),
    ("image missing file", {"imageUrl": "/nonexistent/jammy.qcow2"}, ["imageUrl: '/nonexistent/jammy.qcow2' does not exist on this machine", "download the qcow2 image first"]),
    ("image missing file url", {"imageUrl": "file:///nonexistent/debian-12.qcow2"}, ["imageUrl: 'file:///nonexistent/debian-12.qcow2' does not exist"]),
    ("image file url with a host", {"imageUrl": "file://server/images/a.qcow2"}, ["imageUrl", "names the host 'server'", "three slashes"]),
    ("image unsupported scheme", {"imageUrl": "ftp://mirror.example.com/a.qcow2"}, ["imageUrl", "unsupported scheme 'ftp'"]),
    ("image is a directory", {"imageUrl": "/tmp"}, ["imageUrl: '/tmp' is a directory"]),
    ("apt source not deb", {"osAptSources": ["deb-src http://m.lab/debian bookworm main"]}, ["osAptSources[0]", "does not start with 'deb '"]),
    ("apt source without url", {"osAptSources": ["deb [trusted=yes] bookworm main"]}, ["osAptSources[0]", "no http(s) archive URL"]),
    ("apt source without suite", {"osAptSources": ["deb http://m.lab/debian"]}, ["osAptSources[0]", "names no suite"]),
    ("apt source without component", {"osAptSources": ["deb http://m.lab/debian bookworm"]}, ["osAptSources[0]", "no component after the suite 'bookworm'"]),
    ("apt flat source with component", {"osAptSources": ["deb http://m.lab/k8s/ / main"]}, ["osAptSources[0]", "flat suite '/'"]),
    ("apt source unclosed options", {"osAptSources": ["deb [arch=amd64 http://m.lab/debian bookworm main"]}, ["osAptSources[0]", "without ']'"]),
    ("apt source two lines", {"osAptSources": ["deb http://m.lab/debian bookworm main\ndeb http://x/ y z"]}, ["osAptSources[0]", "is not one line"]),
    ("apt source with quotes", {"osAptSources": ["deb 'http://m.lab/debian' bookworm main"]}, ["osAptSources[0]", "contains quotes"]),
    ("apt source not a string", {"osAptSources": [{"deb": "x"}]}, ["osAptSources[0]", "is not a string"]),
    ("apt key url not http", {"osAptKeyUrl": "ftp://m.lab/key", "osAptSources": ["deb [signed-by=/etc/apt/keyrings/kubeadm-libvirt-os.gpg] http://m.lab/debian bookworm main"]}, ["osAptKeyUrl: 'ftp://m.lab/key' is not an http(s) URL"]),
    ("apt key without sources", {"osAptKeyUrl": "http://m.lab/key.asc"}, ["osAptKeyUrl", "no osAptSources entry uses its key"]),
    ("apt key but other keyring", {"osAptKeyUrl": "http://m.lab/key.asc", "osAptSources": ["deb [signed-by=/usr/share/keyrings/x.gpg] http://m.lab/debian bookworm main"]}, ["osAptSources[0]", "is signed by /usr/share/keyrings/x.gpg", "[signed-by=/etc/apt/keyrings/kubeadm-libvirt-os.gpg]"]),
    ("apt key but no signed-by", {"osAptKeyUrl": "http://m.lab/key.asc", "osAptSources": ["deb http://m.lab/debian bookworm main"]}, ["osAptKeyUrl", "no osAptSources entry uses its key", "[signed-by=/etc/apt/keyrings/kubeadm-libvirt-os.gpg]"]),
    ("unknown runtime source", {"containerRuntimeSource": "static"}, ["containerRuntimeSource: 'static' is not a known value", "docker-repo, os-archive"]),
    ("os-archive containerd 1.6 for 1.36", {"containerRuntimeSource": "os-archive", "kubernetesVersion": "1.36.3", "calicoVersion": "3.32.0", "imageUrl": "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"}, ["containerRuntimeSource: 'os-archive' installs Debian 12's containerd 1.6.20", "needs containerd 2.0", "kubernetesVersion 1.35"]),
    ("registry host with scheme", {"registries": [{"host": "http://192.168.150.1:5000", "plainHttp": True}]}, ["registries[0].host", "not a registry host[:port]", "without a scheme"]),
    ("registry configures nothing", {"registries": [{"host": "192.168.150.1:5000"}]}, ["registries[0]: '192.168.150.1:5000' configures nothing"]),
    ("registry http and ca", {"registries": [{"host": "r.lab", "plainHttp": True, "caCert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}]}, ["registries[0]: 'r.lab' sets both plainHttp and caCert"]),
    ("registry bad ca", {"registries": [{"host": "r.lab", "caCert": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----"}]}, ["registries[0].caCert", "is not a PEM certificate"]),
    ("registry string plainHttp", {"registries": [{"host": "r.lab", "plainHttp": "true"}]}, ["registries[0].plainHttp: 'true' is not a boolean"]),
    ("registry twice", {"registries": [{"host": "r.lab", "plainHttp": True}, {"host": "r.lab", "plainHttp": True}]}, ["registries[1].host: 'r.lab' is configured twice"]),
    ("registry docker.io and mirrors", {"registryMirrors": ["https://m.lab"], "registries": [{"host": "docker.io", "plainHttp": True}]}, ["registries[0].host: 'docker.io' is also configured by registryMirrors"]),
    ("registry unknown key", {"registries": [{"host": "r.lab", "plainHttp": True, "insecure": True}]}, ["registries[0].insecure", "not a known registry key"]),
    ("calico registry with scheme", {"calicoRegistry": "https://quay.io"}, ["calicoRegistry: 'https://quay.io' is not a registry", "192.168.150.1:5000"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_rule_names_key_value_and_fix(overrides: dict, fragments: list[str]) -> None:
    problems = problems_for(**overrides)
    matching = [problem for problem in problems if all(fragment in problem for fragment in fragments)]
    assert matching, f"no problem contains {fragments}; got {problems}"
    assert all("; fix: " in problem for problem in problems)


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_for(
        vcpus="1", kubeProxyMode="nftables", podSubnet="192.168.0.0/16", nodes=with_node(1, ip="10.0.0.1", role="boss")
    )
    assert len(problems) == 5, problems


def test_plain_text_private_key_is_refused_without_echoing_it(key_pair) -> None:
    problems = problems_for(sshPublicKey=key_pair.public_key, sshPrivateKey=key_pair.private_key)
    assert any("sshPrivateKey: '[secret]' is stored in plain text" in problem for problem in problems)
    body = key_pair.private_key.splitlines()[1]
    assert not any(body in problem for problem in problems)


def test_secret_private_key_with_its_public_key_is_accepted(key_pair) -> None:
    config = parse_cluster_config(
        RawConfig(
            dev_values(sshPublicKey=key_pair.public_key, sshPrivateKey=key_pair.private_key),
            frozenset({"kubeadm-libvirt:sshPrivateKey"}),
        )
    )
    assert config.ssh.public_key == key_pair.public_key
    assert not config.ssh.generates_key_pair
    assert key_pair.private_key.strip() not in repr(config)


def test_1_35_with_opt_in_is_accepted() -> None:
    config = parse_cluster_config(RawConfig(dev_values(kubernetesVersion="1.35.2", allowCgroupV1="true")))
    assert config.kubernetes.minor == "1.35" and config.kubernetes.allow_cgroup_v1


def test_an_untested_calico_is_accepted_with_the_opt_in_and_says_so() -> None:
    config = parse_cluster_config(RawConfig(dev_values(calicoVersion="3.28.1", allowUntestedCalico="true")))
    assert config.kubernetes.calico_version == "3.28.1"
    assert "3.28.1 supports Kubernetes 1.27-1.30, not 1.34" in config.kubernetes.untested_calico
    assert parse_cluster_config(RawConfig(dev_values(allowUntestedCalico="true"))).kubernetes.untested_calico == ""


def test_1_36_is_accepted_on_a_cgroup_v2_image() -> None:
    url = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
    config = parse_cluster_config(RawConfig(dev_values(kubernetesVersion="1.36", calicoVersion="3.32.1", imageUrl=url)))
    assert config.kubernetes.minor_number == 36


def test_no_workers_is_allowed_and_makes_the_control_plane_schedulable() -> None:
    config = parse_cluster_config(RawConfig(dev_values(nodes=DEV_NODES[:1])))
    assert config.workers == () and config.control_plane_schedulable


def test_mirror_profile_and_explicit_override() -> None:
    china = parse_cluster_config(RawConfig(dev_values(mirror="china", imageRepository="registry.example.com/k8s")))
    assert china.kubernetes.kubernetes_apt_mirror == "https://mirrors.aliyun.com/kubernetes-new/core/stable"
    assert china.kubernetes.image_repository == "registry.example.com/k8s"


def test_invalid_config_stops_the_program_before_any_resource() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", overrides={"vcpus": "1", "podSubnet": "192.168.141.0/24"}, command_stdout={})
    message = str(raised.value)
    assert "3 problems" in message and "vcpus: 1 is below 2" in message and "holds 1 node /24 blocks" in message
    registered = pulumi.runtime.settings.get_monitor().registrations
    assert registered == []


def qcow2_file(path) -> str:
    path.write_bytes(b"QFI\xfb" + bytes(60))  # the qcow2 magic is all validation reads
    return str(path)


def test_local_image_as_path_or_file_url_becomes_a_file_url_source(tmp_path) -> None:
    image = qcow2_file(tmp_path / "debian 12%.qcow2")  # a space and a '%': the provider parses source as a URL
    expected = "file://" + str(tmp_path).replace(" ", "%20") + "/debian%2012%25.qcow2"
    for value in (image, expected):
        config = parse_cluster_config(RawConfig(dev_values(imageUrl=value)))
        assert config.image.source == expected and config.image.file_name == "debian 12%.qcow2", value
        assert config.image.configured == value


def test_http_image_is_passed_unchanged() -> None:
    config = parse_cluster_config(RawConfig(dev_values()))
    assert config.image.source == config.image.configured == merged_config("dev")["kubeadm-libvirt:imageUrl"]
    assert config.image.file_name == "bionic-server-cloudimg-amd64.img"


def test_a_local_file_that_is_not_qcow2_is_refused(tmp_path) -> None:
    raw = tmp_path / "image.raw"
    raw.write_bytes(bytes(64))
    assert any(f"imageUrl: '{raw}' is not a qcow2 image" in problem for problem in problems_for(imageUrl=str(raw)))


def test_accelerator_and_timeout_scale_are_parsed() -> None:
    config = parse_cluster_config(RawConfig(dev_values(accelerator="tcg", timeoutScale="1.5")))
    assert config.accelerator == "tcg" and config.timeouts.percent == 150
    assert config.timeouts.seconds(900) == 1350 and config.timeouts.duration(1800) == "45m"
    default = parse_cluster_config(RawConfig(dev_values()))
    assert default.accelerator == "kvm" and default.timeouts.percent == 100


def test_a_debian_12_image_is_cgroup_v2() -> None:
    url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    config = parse_cluster_config(RawConfig(dev_values(kubernetesVersion="1.35", imageUrl=url)))
    assert config.kubernetes.minor_number == 35 and not config.kubernetes.allow_cgroup_v1


def test_the_committed_dev_stack_carries_no_encryption_salt_or_secret() -> None:
    # `pulumi stack init` writes an encryptionsalt derived from the local passphrase into the stack file; committed,
    # it makes every other machine's passphrase "incorrect" (the real CLI said exactly that in the lab). The dev
    # stack has no secrets, so its file must have neither.
    from components.project_files import PROJECT_ROOT

    text = (PROJECT_ROOT / "Pulumi.dev.yaml").read_text()
    assert "encryptionsalt" not in text and "secure:" not in text


LAB_SOURCE = "deb [signed-by=/etc/apt/keyrings/kubeadm-libvirt-os.gpg] http://192.168.150.1:8080/debian bookworm main"
DEBIAN_12 = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"


def test_the_lab_sources_runtime_and_registries_are_accepted() -> None:
    config = parse_cluster_config(
        RawConfig(
            dev_values(
                imageUrl=DEBIAN_12,
                kubernetesVersion="1.34.4",
                osAptSources=[LAB_SOURCE, "deb http://192.168.150.1:8080/k8s/ /"],
                osAptKeyUrl="http://192.168.150.1:8080/debian/archive.key",
                containerRuntimeSource="os-archive",
                registries=[{"host": "192.168.150.1:5000", "plainHttp": True}],
                calicoRegistry="192.168.150.1:5000",
            )
        )
    )
    assert config.os_apt.sources == (LAB_SOURCE, "deb http://192.168.150.1:8080/k8s/ /")
    assert config.os_apt.key_url == "http://192.168.150.1:8080/debian/archive.key"
    kubernetes = config.kubernetes
    assert kubernetes.container_runtime_source == "os-archive"
    assert [(r.host, r.plain_http, r.ca_cert) for r in kubernetes.registries] == [("192.168.150.1:5000", True, None)]
    assert kubernetes.calico_registry == "192.168.150.1:5000/"


def test_the_defaults_keep_the_image_sources_docker_repo_and_quay() -> None:
    config = parse_cluster_config(RawConfig(dev_values()))
    assert config.os_apt.sources == () and config.os_apt.key_url == ""
    assert config.kubernetes.container_runtime_source == "docker-repo"
    assert config.kubernetes.registries == () and config.kubernetes.calico_registry == "quay.io/"


def test_a_registry_with_a_real_ca_certificate_is_accepted(ca_certificate: str) -> None:
    pem = ca_certificate
    config = parse_cluster_config(RawConfig(dev_values(registries=[{"host": "registry.lab:5443", "caCert": pem}])))
    (registry,) = config.kubernetes.registries
    assert registry.host == "registry.lab:5443" and not registry.plain_http and registry.ca_cert == pem.strip() + "\n"


def test_os_archive_on_debian_12_is_fine_up_to_1_35() -> None:
    config = parse_cluster_config(RawConfig(dev_values(containerRuntimeSource="os-archive", kubernetesVersion="1.35.4", imageUrl=DEBIAN_12)))
    assert config.kubernetes.container_runtime_source == "os-archive"
