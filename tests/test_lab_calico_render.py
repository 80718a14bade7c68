"""What the lab's Calico part computes without building anything: the operator manifest it serves, the version flags,
the images it expects the operator to deploy, and how the mirror's services name and serve it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from components import yaml_io
from lab.calico import INIT_IMAGE_ENV, calico_ldflags, deployed_images, rewrite_operator_manifest
from lab.errors import LabError
from lab.mirror_services import MirrorEndpoints, link_children
from lab.toolchain import load_pins

PINS = load_pins()["calico"]


def operator_stream(image: str = "quay.io/tigera/operator:v1.34.13", env: list[dict] | None = None) -> list[dict]:
    """The shape of the calico module's tigera-operator.yaml: a namespace, a CRD, the operator's Deployment."""
    container = {
        "name": "tigera-operator",
        "image": image,
        "command": ["operator"],
        "env": env if env is not None else [{"name": "WATCH_NAMESPACE", "value": ""}, {"name": INIT_IMAGE_ENV, "value": "v1.34.13"}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tigera-operator"}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "installations.operator.tigera.io"}, "spec": {"description": "a\nb\n"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "tigera-operator", "namespace": "tigera-operator"},
            "spec": {"template": {"spec": {"containers": [container]}}},
        },
    ]


def test_the_served_operator_manifest_runs_the_built_operator_and_changes_nothing_else() -> None:
    original = operator_stream()
    rewritten = list(yaml.safe_load_all(rewrite_operator_manifest(yaml_io.dump_all(original), "v1.35.0")))
    assert rewritten[:2] == original[:2]
    container = rewritten[2]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "quay.io/tigera/operator:v1.35.0"
    assert container["env"] == [{"name": "WATCH_NAMESPACE", "value": ""}, {"name": INIT_IMAGE_ENV, "value": "v1.35.0"}]
    assert container["command"] == ["operator"]


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        (operator_stream()[:2], "0 tigera-operator containers"),
        (operator_stream(image="docker.io/tigera/operator:v1.34.13"), "not quay.io/tigera/operator"),
        (operator_stream(env=[{"name": "WATCH_NAMESPACE", "value": ""}]), f"sets {INIT_IMAGE_ENV} 0 times"),
    ],
)
def test_a_manifest_of_another_shape_is_refused_not_half_rewritten(stream: list[dict], problem: str) -> None:
    with pytest.raises(LabError, match=problem):
        rewrite_operator_manifest(yaml_io.dump_all(stream), "v1.35.0")


def test_version_flags_carry_the_pinned_version_and_the_commit_of_the_pseudo_version() -> None:
    flags = calico_ldflags("v3.28.1", PINS["calico"]["version"]).split()
    values = dict(flag.split("=", 1) for flag in flags if flag != "-X")
    assert values["main.VERSION"] == "v3.28.1"
    assert values["github.com/projectcalico/calico/node/pkg/lifecycle/startup.VERSION"] == "v3.28.1"
    assert values["github.com/projectcalico/calico/typha/pkg/buildinfo.GitRevision"] == "a0db560f0520"
    assert values["github.com/projectcalico/calico/typha/pkg/buildinfo.BuildDate"] == "2025-08-13T17:03:00+0000"


def test_the_expected_images_are_the_operators_list_less_what_the_installation_turns_off(tmp_path: Path) -> None:
    """deployed_images reads the operator's own list; here a stand-in prints an excerpt of v1.35.0's."""
    listed = [
        "docker.io/calico/cni:v3.28.1", "docker.io/calico/cni:v3.28.1-fips", "docker.io/calico/cni-windows:v3.28.1",
        "docker.io/calico/key-cert-provisioner:v3.28.1", "docker.io/calico/kube-controllers:v3.28.1",
        "docker.io/calico/node:v3.28.1", "quay.io/calico/node:v3.28.1-fips", "docker.io/calico/typha:v3.28.1",
        "docker.io/calico/pod2daemon-flexvol:v3.28.1", "quay.io/tigera/operator:v1.35.0", "docker.io/calico/apiserver:v3.28.1",
        "docker.io/calico/csi:v3.28.1", "docker.io/calico/node-driver-registrar:v3.28.1", "quay.io/tigera/cnx-node:v3.20.0-1.0",
    ]  # fmt: skip
    operator = tmp_path / "operator"
    operator.write_text("#!/bin/sh\n" + "".join(f"echo {ref}\n" for ref in listed))
    operator.chmod(operator.stat().st_mode | stat.S_IXUSR)
    assert deployed_images(operator, "v3.28.1", "v1.35.0") == [
        "calico/apiserver:v3.28.1", "calico/cni:v3.28.1", "calico/kube-controllers:v3.28.1", "calico/node:v3.28.1",
        "calico/typha:v3.28.1", "tigera/operator:v1.35.0",
    ]  # fmt: skip
    with pytest.raises(LabError, match="not operator v1.36.0"):
        deployed_images(operator, "v3.28.1", "v1.36.0")


def test_endpoints_name_the_calico_registry_manifests_and_smoke_image() -> None:
    endpoints = MirrorEndpoints("192.168.141.1")
    # The operator appends calico/<name>:<tag> to the Installation's registry, which must end with a slash.
    assert endpoints.calico_registry == "192.168.141.1:5000/"
    assert endpoints.calico_manifest_url == "http://192.168.141.1:8080/calico/manifests"
    assert endpoints.smoke_image == f"192.168.141.1:5000/lab/nginx:{PINS['smoke']['tag']}"


def test_one_http_root_links_every_builds_www_and_follows_a_rebuild(tmp_path: Path) -> None:
    kubernetes, calico, rebuilt = tmp_path / "mirror", tmp_path / "calico", tmp_path / "calico-rebuilt"
    for directory in (kubernetes / "debian", kubernetes / "kubernetes", calico / "calico", rebuilt / "calico"):
        directory.mkdir(parents=True)
    root = tmp_path / "www"
    link_children(root, [kubernetes, calico])
    assert {p.name: p.readlink() for p in root.iterdir()} == {"debian": kubernetes / "debian", "kubernetes": kubernetes / "kubernetes", "calico": calico / "calico"}
    link_children(root, [rebuilt])
    assert {p.name: p.readlink() for p in root.iterdir()} == {"calico": rebuilt / "calico"}
    with pytest.raises(LabError, match="share top-level names"):
        link_children(root, [calico, rebuilt])
