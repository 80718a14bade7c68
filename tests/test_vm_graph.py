"""The VM layer's resource graph, from the real program under mocks with the dev stack config."""

from __future__ import annotations

import json
from collections import Counter

import yaml

from components.mockrun import StackRun, fake_key_pair, redact, run_program

NODE_NAMES = ["kubernetes-master", "kubernetes-slave1", "kubernetes-slave2"]
VM_TYPES = ("libvirt:index/volume:Volume", "libvirt:index/cloudInitDisk:CloudInitDisk", "libvirt:index/domain:Domain")


def vm_inputs(run: StackRun, node: str) -> dict[str, dict]:
    """The inputs of one node's disk, cloud-init disk and domain."""
    return {r.name: r.inputs for r in run.registrations if r.type in VM_TYPES and r.name.startswith(f"{node}-")}


def test_resource_counts_and_types(dev_run: StackRun) -> None:
    counts = Counter(r.type for r in dev_run.registrations if not r.type.startswith("command:"))
    assert counts == {
        "kubeadm-libvirt:index:Infrastructure": 1,
        "kubeadm-libvirt:index:Node": 3,
        "tls:index/privateKey:PrivateKey": 4,  # the login key pair and one host key per node
        "libvirt:index/network:Network": 1,
        "libvirt:index/volume:Volume": 4,
        "libvirt:index/cloudInitDisk:CloudInitDisk": 3,
        "libvirt:index/domain:Domain": 3,
    } | {t: n for t, n in counts.items() if t == "kubeadm-libvirt:index:KubeadmCluster"}


def test_every_child_is_parented(dev_run: StackRun) -> None:
    by_urn = dev_run.by_urn()
    infrastructure = dev_run.named("kubeadm-libvirt")
    assert infrastructure.parent.endswith("pulumi:pulumi:Stack::kubeadm-libvirt-dev")
    for name in ("kubeadm-libvirt-network", "kubeadm-libvirt-base-image", "kubeadm-libvirt-ssh-key", *NODE_NAMES):
        assert dev_run.named(name).parent == infrastructure.urn, name
    for node in NODE_NAMES:
        for suffix in ("disk", "cloudinit", "domain"):
            child = dev_run.named(f"{node}-{suffix}")
            assert by_urn[child.parent].name == node


def test_network_is_static_nat_with_dns(dev_run: StackRun) -> None:
    network = dev_run.named("kubeadm-libvirt-network").inputs
    assert network["mode"] == "nat" and network["addresses"] == ["192.168.141.0/24"]
    assert network["dhcp"] == {"enabled": False} and network["dns"] == {"enabled": True} and network["autostart"]


def test_node_disks_are_copy_on_write_children_of_one_base_image(dev_run: StackRun) -> None:
    base = dev_run.named("kubeadm-libvirt-base-image")
    assert base.inputs["source"].endswith("bionic-server-cloudimg-amd64.img") and base.inputs["format"] == "qcow2"
    for node in NODE_NAMES:
        disk = dev_run.named(f"{node}-disk")
        assert disk.inputs["baseVolumeId"] == "kubeadm-libvirt-base-image-id"
        assert base.urn in disk.property_dependencies["baseVolumeId"]
        assert "source" not in disk.inputs and disk.inputs["size"] == 20 * 1024**3


def test_each_vm_gets_its_own_cloud_init(dev_run: StackRun) -> None:
    generated_key = fake_key_pair("kubeadm-libvirt-ssh-key")[1].strip()  # what the mocked tls provider returned
    ips = {"kubernetes-master": "192.168.141.130", "kubernetes-slave1": "192.168.141.131", "kubernetes-slave2": "192.168.141.132"}
    for node, ip in ips.items():
        disk = dev_run.named(f"{node}-cloudinit")
        assert disk.input("userData").startswith("#cloud-config\n")
        user_data = yaml.safe_load(disk.input("userData"))
        assert user_data["hostname"] == node and user_data["ssh_pwauth"] is False
        (user,) = user_data["users"]
        assert user["name"] == "ubuntu" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["lock_passwd"] is True
        assert user["ssh_authorized_keys"] == [generated_key]
        meta = yaml.safe_load(disk.input("metaData"))
        assert meta["local-hostname"] == node and meta["instance-id"].startswith(f"{node}-")
        (nic,) = yaml.safe_load(disk.input("networkConfig"))["ethernets"].values()
        assert nic["addresses"] == [f"{ip}/24"] and nic["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.141.1"}]
        assert nic["nameservers"] == {"addresses": ["192.168.141.1"]} and nic["dhcp4"] is False
    instance_ids = {yaml.safe_load(dev_run.named(f"{n}-cloudinit").input("metaData"))["instance-id"] for n in ips}
    assert len(instance_ids) == 3


def test_domain_nic_mac_matches_netplan_match(dev_run: StackRun) -> None:
    macs = set()
    for node in NODE_NAMES:
        domain = dev_run.named(f"{node}-domain").inputs
        (nic,) = domain["networkInterfaces"]
        (netplan_nic,) = yaml.safe_load(dev_run.named(f"{node}-cloudinit").input("networkConfig"))["ethernets"].values()
        assert nic["mac"] == netplan_nic["match"]["macaddress"]
        macs.add(nic["mac"])
    assert len(macs) == 3


def test_domains_have_console_no_dhcp_features_and_replace_with_their_seed(dev_run: StackRun) -> None:
    for node in NODE_NAMES:
        domain = dev_run.named(f"{node}-domain")
        inputs = domain.inputs
        assert inputs["name"] == node and inputs["vcpu"] == 2 and inputs["memory"] == 2048
        assert {"type": "pty", "targetPort": "0", "targetType": "serial"} in inputs["consoles"]
        (nic,) = inputs["networkInterfaces"]
        assert "addresses" not in nic and nic["waitForLease"] is False
        assert inputs["cloudinit"] == f"{node}-cloudinit-id" and inputs["disks"] == [{"volumeId": f"{node}-disk-id"}]
        assert "cloudinit" in domain.replace_on_changes and domain.delete_before_replace
        assert domain.custom_timeouts["create"] == "15m"
        for part in ("disk", "cloudinit"):
            assert dev_run.named(f"{node}-{part}").delete_before_replace


def test_generated_private_key_is_a_secret_output(dev_run: StackRun) -> None:
    output = dev_run.outputs["sshPrivateKey"]
    assert output.secret and "PRIVATE KEY" in output.value
    assert dev_run.outputs["nodes"].value["kubernetes-slave1"] == {"ip": "192.168.141.131", "role": "worker"}


def test_configured_key_pair_is_used_and_never_exposed(dev_run_with_key: StackRun, key_pair) -> None:
    run = dev_run_with_key
    assert {r.name for r in run.of_type("tls:index/privateKey:PrivateKey")} == {f"{n}-host-key" for n in NODE_NAMES}
    assert "sshPrivateKey" not in run.outputs
    for node in NODE_NAMES:
        user_data = yaml.safe_load(run.named(f"{node}-cloudinit").input("userData"))
        assert user_data["users"][0]["ssh_authorized_keys"] == [key_pair.public_key]
    secret_body = key_pair.private_key.splitlines()[1]
    for registration in run.registrations:
        assert secret_body not in json.dumps(redact(registration.inputs)), registration.name


def test_rendering_is_deterministic() -> None:
    def snapshot(run: StackRun) -> list[tuple[str, str]]:
        # Registration order depends on the event loop; what each resource receives must not.
        return sorted((r.urn, json.dumps(r.inputs, sort_keys=True)) for r in run.registrations)

    assert snapshot(run_program("dev")) == snapshot(run_program("dev"))


def test_adding_a_worker_leaves_existing_vms_untouched(dev_run: StackRun) -> None:
    nodes = json.loads(json.dumps(dev_run.outputs["nodes"].value))
    entries = [{"name": n, "role": v["role"], "ip": v["ip"]} for n, v in nodes.items()]
    bigger = run_program("dev", overrides={"nodes": entries + [{"name": "kubernetes-slave3", "role": "worker", "ip": "192.168.141.133"}]})
    for node in NODE_NAMES:
        assert vm_inputs(bigger, node) == vm_inputs(dev_run, node), node
    assert bigger.named("kubeadm-libvirt-network").inputs == dev_run.named("kubeadm-libvirt-network").inputs
    assert vm_inputs(bigger, "kubernetes-slave3")


def test_a_changed_seed_renames_that_nodes_disk_and_iso_only(dev_run: StackRun) -> None:
    entries = [
        {"name": "kubernetes-master", "role": "control-plane", "ip": "192.168.141.130"},
        {"name": "kubernetes-slave1", "role": "worker", "ip": "192.168.141.141"},
        {"name": "kubernetes-slave2", "role": "worker", "ip": "192.168.141.132"},
    ]
    moved = run_program("dev", overrides={"nodes": entries})
    for part in ("disk", "cloudinit"):
        assert moved.named(f"kubernetes-slave1-{part}").inputs["name"] != dev_run.named(f"kubernetes-slave1-{part}").inputs["name"]
    for node in ("kubernetes-master", "kubernetes-slave2"):
        assert vm_inputs(moved, node) == vm_inputs(dev_run, node)


def test_protect_control_plane_protects_only_its_vm() -> None:
    run = run_program("dev", overrides={"protectControlPlane": True})
    for registration in run.registrations:
        if registration.type in VM_TYPES:
            assert registration.protect == registration.name.startswith("kubernetes-master-"), registration.name
    assert not any(r.protect for r in run_program("dev").registrations)


def test_program_tolerates_unknowns_in_preview() -> None:
    run = run_program("dev", preview=True)
    assert len(run.of_type("libvirt:index/domain:Domain")) == 3


def test_host_keys_are_generated_installed_and_pinned(dev_run: StackRun) -> None:
    ip_of = {"kubernetes-master": "192.168.141.130", "kubernetes-slave1": "192.168.141.131", "kubernetes-slave2": "192.168.141.132"}
    pinned: dict[str, str] = {}
    for node in NODE_NAMES:
        host_key = dev_run.named(f"{node}-host-key")
        assert host_key.input("algorithm") == "ED25519" and host_key.parent == dev_run.named(node).urn
        disk = dev_run.named(f"{node}-cloudinit")
        assert disk.is_secret("userData") and not disk.is_secret("networkConfig") and not disk.is_secret("metaData")
        ssh_keys = yaml.safe_load(disk.input("userData"))["ssh_keys"]
        assert ssh_keys["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert yaml.safe_load(disk.input("userData"))["ssh_deletekeys"] is True
        pinned[ip_of[node]] = ssh_keys["ed25519_public"]
    assert len(set(pinned.values())) == 3
    for command in dev_run.of_type("command:remote:Command"):
        connection = command.input("connection")
        assert connection["hostKey"] == pinned[connection["host"]], command.name


def test_accelerator_sets_the_domain_type_and_cpu(dev_run: StackRun) -> None:
    for node in NODE_NAMES:
        kvm = dev_run.named(f"{node}-domain").inputs
        assert kvm["type"] == "kvm" and kvm["cpu"] == {"mode": "host-passthrough"}
    tcg_run = run_program("dev", overrides={"accelerator": "tcg"})
    for node in NODE_NAMES:
        tcg = tcg_run.named(f"{node}-domain").inputs
        # software emulation; host-passthrough needs KVM, and the SDK cannot name a model: libvirt's default CPU
        assert tcg["type"] == "qemu" and "cpu" not in tcg


def test_a_local_image_is_uploaded_from_a_file_url(tmp_path) -> None:
    image = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    run = run_program("dev", overrides={"imageUrl": str(image)})
    base = run.named("kubeadm-libvirt-base-image").inputs
    assert base["source"] == f"file://{image}" and base["name"] == "kubeadm-libvirt-debian-12-genericcloud-amd64.qcow2"


def test_timeout_scale_stretches_the_domain_create_timeout() -> None:
    run = run_program("dev", overrides={"timeoutScale": "3"})
    assert {run.named(f"{node}-domain").custom_timeouts["create"] for node in NODE_NAMES} == {"45m"}
