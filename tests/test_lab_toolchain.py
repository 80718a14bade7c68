"""The lab's Pulumi toolchain, built from Go modules: true versions, the versions the SDKs request, a libvirt schema
that matches the Python SDK, and a CLI that runs with no network at all."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from lab.toolchain import STAND_INS, Toolchain, ensure_toolchain, load_pins

pytestmark = pytest.mark.engine

SDK_PACKAGES = {"libvirt": "pulumi_libvirt", "command": "pulumi_command", "tls": "pulumi_tls"}


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return ensure_toolchain()


def pulumi(toolchain: Toolchain, *args: str) -> str:
    done = subprocess.run([str(toolchain.pulumi), *args], env=toolchain.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def requested_plugin(package: str) -> dict:
    return json.loads(resources.files(package).joinpath("pulumi-plugin.json").read_text())


def test_the_cli_reports_its_pinned_version(toolchain: Toolchain) -> None:
    assert pulumi(toolchain, "version").strip() == load_pins()["pulumi"]["cli"]["version"]


def test_installed_plugins_are_exactly_the_versions_the_sdks_request(toolchain: Toolchain) -> None:
    listing = pulumi(toolchain, "plugin", "ls", "--json")
    installed = {(p["name"], p["version"]) for p in json.loads(listing) if p["kind"] == "resource"}
    for name, package in SDK_PACKAGES.items():
        requested = requested_plugin(package)
        assert (name, requested["version"]) in installed, f"{name} {requested['version']} not in {installed}"
        assert load_pins()["plugins"][name]["version"] == requested["version"]


def test_the_libvirt_plugin_serves_a_schema_matching_the_python_sdk(toolchain: Toolchain) -> None:
    # The plugin is started and asked for its schema (GetSchema), as the engine would.
    schema = json.loads(pulumi(toolchain, "package", "get-schema", f"libvirt@{requested_plugin('pulumi_libvirt')['version']}"))
    sdk_dir = Path(resources.files("pulumi_libvirt"))
    for token, module in {"domain:Domain": "domain", "volume:Volume": "volume", "network:Network": "network",
                          "cloudInitDisk:CloudInitDisk": "cloud_init_disk", "pool:Pool": "pool"}.items():  # fmt: skip
        resource = schema["resources"][f"libvirt:index/{token}"]
        schema_names = set(resource.get("inputProperties", {})) | set(resource.get("properties", {}))
        sdk_names = {_camel(name) for name in re.findall(r'__props__\.__dict__\["(\w+)"\]', (sdk_dir / f"{module}.py").read_text())}
        assert schema_names == sdk_names, f"{token}: schema-only {schema_names - sdk_names}, SDK-only {sdk_names - schema_names}"


def test_the_toolchain_runs_without_plugin_downloads_or_update_checks(toolchain: Toolchain) -> None:
    env = toolchain.env()
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true" and env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert env["PULUMI_IGNORE_AMBIENT_PLUGINS"] == "true"
    assert Path(env["PULUMI_HOME"]).is_relative_to(toolchain.root)


def test_the_manifest_records_build_times_and_size(toolchain: Toolchain) -> None:
    manifest = toolchain.manifest
    assert set(manifest["seconds"]) == {"pulumi", "libvirt", "plugins", "total"}
    assert manifest["bytes"] > 50 * 2**20
    assert set(manifest["versions"]) == {"pulumi", "libvirt", *STAND_INS}


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(part.title() for part in rest)

