"""The dev stack's rendered seeds: kept as golden files and checked by the tools that consume them on a node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from components.mockrun import StackRun
from tests.golden import assert_matches_golden
from tests.tools import require_tool

NODE_NAMES = ["kubernetes-master", "kubernetes-slave1", "kubernetes-slave2"]


@pytest.mark.parametrize("node", NODE_NAMES)
def test_seed_matches_golden_files(dev_run: StackRun, node: str) -> None:
    for file, text in dev_run.seed_files(node).items():
        assert_matches_golden(f"dev/{node}/{file}", text)


@pytest.mark.parametrize("node", NODE_NAMES)
def test_user_data_passes_cloud_init_schema(dev_run: StackRun, node: str, tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init", "cloud-init")
    path = tmp_path / "user-data"
    path.write_text(dev_run.seed_files(node)["user-data"])
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_schema_check_rejects_a_broken_user_data(tmp_path: Path) -> None:
    """The check above can fail: a wrong type is reported by the same command."""
    cloud_init = require_tool("cloud-init", "cloud-init")
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nssh_pwauth: [not, a, bool]\n")
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode != 0


def render_netplan_as_cloud_init_would(network_config: str, workdir: Path) -> Path:
    """cloud-init's own converter writes what it would put in /etc/netplan on an Ubuntu node."""
    cloud_init = require_tool("cloud-init", "cloud-init")
    source = workdir / "network-config"
    source.write_text(network_config)
    out = workdir / "converted"
    subprocess.run(
        [cloud_init, "devel", "net-convert", "--network-data", str(source), "--kind", "yaml",
         "--distro", "ubuntu", "--output-kind", "netplan", "--directory", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (netplan_file,) = out.rglob("*.yaml")
    return netplan_file


def netplan_generate(netplan_yaml: str, root: Path) -> subprocess.CompletedProcess[str]:
    netplan = require_tool("netplan", "netplan.io")
    target = root / "etc" / "netplan" / "50-cloud-init.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(netplan_yaml)
    target.chmod(0o600)
    return subprocess.run([netplan, "generate", "--root-dir", str(root)], capture_output=True, text=True)


@pytest.mark.parametrize("node", NODE_NAMES)
def test_network_config_goes_through_cloud_init_and_netplan(dev_run: StackRun, node: str, tmp_path: Path) -> None:
    network_config = dev_run.seed_files(node)["network-config"]
    converted = render_netplan_as_cloud_init_would(network_config, tmp_path)
    result = netplan_generate(converted.read_text(), tmp_path / "root")
    assert result.returncode == 0, result.stderr
    (networkd,) = (tmp_path / "root" / "run" / "systemd" / "network").glob("*ens3.network")
    unit = networkd.read_text()
    ip = {"kubernetes-master": "130", "kubernetes-slave1": "131", "kubernetes-slave2": "132"}[node]
    mac = yaml.safe_load(network_config)["ethernets"]["ens3"]["match"]["macaddress"]
    assert f"Address=192.168.141.{ip}/24" in unit and "DNS=192.168.141.1" in unit
    assert "[Route]\nDestination=0.0.0.0/0\nGateway=192.168.141.1" in unit
    assert f"MACAddress={mac}" in unit and "Name=ens3" in unit
    # Ubuntu 18.04's netplan (< 0.103) rejects `to: default`; the rendered form must not use it.
    assert "default" not in yaml.safe_load(network_config)["ethernets"]["ens3"]["routes"][0]["to"]


def test_netplan_check_rejects_a_broken_network_config(tmp_path: Path) -> None:
    result = netplan_generate("network:\n  version: 2\n  ethernets:\n    ens3:\n      addresses: [not-an-ip]\n", tmp_path)
    assert result.returncode != 0
