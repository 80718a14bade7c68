"""The built Calico part of the lab mirror (python3 -m lab mirror build): binaries that say the pinned versions,
exactly the images the real operator deploys for the stack's Installation, images that run, and the manifests the
stack applies. Read with the real tools (skopeo, tar, the built binaries, chroot) against local files; nothing is
fetched, and the one server started (nginx) runs in a network namespace of its own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab.calico import INIT_IMAGE_ENV, NOT_DEPLOYED, OPERATOR_IMAGE, WWW_PATH, CalicoBuild, deployed_images, require_calico, smoke_image_ref
from lab.errors import LabError
from lab.toolchain import load_pins
from tests.test_lab_mirror import run

pytestmark = pytest.mark.mirror
PINS = load_pins()["calico"]
CALICO = PINS["version"]
OPERATOR = PINS["operator"]["version"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and network namespaces need root (CI runs as root)")


@pytest.fixture(scope="module")
def calico() -> CalicoBuild:
    try:
        return require_calico()
    except LabError as error:
        pytest.fail(str(error))


@pytest.mark.parametrize(
    ("binary", "args", "expected"),
    [
        ("calico-node", ["-v"], f"{CALICO}\n"),
        ("calico-typha", ["--version"], f"Version:            {CALICO}\n"),
        ("kube-controllers", ["--version"], f"{CALICO}\n"),
        ("calico", ["-v"], f"{CALICO}\n"),
        ("check-status", ["-v"], f"{CALICO}\n"),
        # The operator's Calico is the tag it asks for: the one every calico/* image carries.
        ("operator", ["--version"], f"Operator: {OPERATOR}\nCalico: {CALICO}\n"),
    ],
)
def test_binaries_report_their_pinned_versions(calico: CalicoBuild, binary: str, args: list[str], expected: str) -> None:
    assert run(calico.bin / binary, *args).startswith(expected)


def test_the_images_are_exactly_what_the_real_operator_deploys_plus_the_smoke_image(calico: CalicoBuild) -> None:
    refs = calico.image_refs()
    assert sorted(refs.values()) == sorted([*deployed_images(calico.bin / "operator", CALICO, OPERATOR), smoke_image_ref()])
    # The operator's whole list, read here rather than trusted: every Calico image of this tag is built or is one
    # the Installation turns off, and the five it deploys are all there.
    listed = run(calico.bin / "operator", "--print-images=list").split()
    calico_images = {ref.split("/", 1)[1].split(":")[0] for ref in listed if ref.startswith("docker.io/calico/") and ref.endswith(f":{CALICO}")}
    built = {ref.split(":")[0] for ref in refs.values()}
    assert calico_images - built == set(NOT_DEPLOYED)
    assert {f"calico/{n}" for n in ("node", "cni", "typha", "kube-controllers", "apiserver")} <= built
    assert f"{OPERATOR_IMAGE}:{OPERATOR}" in listed and f"tigera/operator:{OPERATOR}" in refs.values()


EXPECTED_CONFIG = {
    "node": (["/usr/sbin/start_runit"], None),
    "cni": (["/opt/cni/bin/install"], None),
    "typha": (["/usr/bin/calico-typha"], "999"),
    "kube-controllers": (["/usr/bin/kube-controllers"], "999"),
    "apiserver": (["/code/apiserver"], "10001:10001"),
    "operator": (["/usr/bin/operator"], "10001:10001"),
    "nginx": (["/usr/sbin/nginx", "-g", "daemon off;"], None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIG))
def test_every_layout_is_linux_amd64_with_its_entrypoint_and_user(calico: CalicoBuild, name: str) -> None:
    ref = calico.image_refs()[name]
    layout = f"oci:{calico.images / name}:{ref.rsplit(':', 1)[1]}"
    inspected = json.loads(run("skopeo", "inspect", layout))
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    config = json.loads(run("skopeo", "inspect", "--config", layout))["config"]
    entrypoint, user = EXPECTED_CONFIG[name]
    assert config["Entrypoint"] == entrypoint
    assert config.get("User") == user
    # Every file the entrypoint and the operator's commands and probes name is in the image.
    files = layer_files(calico, name)
    wanted = {
        "node": {"usr/bin/calico-node", "usr/bin/mountns", "usr/bin/runsvdir", "usr/bin/svlogd", "usr/bin/which", "usr/sbin/iptables", "usr/sbin/ipset", "etc/rc.local"},
        "cni": {f"opt/cni/bin/{p}" for p in ("install", "calico", "calico-ipam", "host-local", "portmap", "loopback", "tuning", "bandwidth")},
        "typha": {"etc/calico/typha.cfg", "etc/passwd", "etc/ssl/certs/ca-certificates.crt"},
        "kube-controllers": {"usr/bin/check-status", "status/status.json"},
        "apiserver": {"etc/passwd", "etc/group"},
        "operator": {"etc/ssl/certs/ca-certificates.crt"},
        "nginx": {"var/www/html/index.nginx-debian.html", "etc/nginx/sites-enabled/default", "var/log/nginx"},
    }[name]
    assert {e.lstrip("/") for e in entrypoint[:1]} | wanted <= files
    assert not any(f.startswith("dev/") and f != "dev/" for f in files), "device nodes belong to the runtime, not the layer"


def test_the_node_image_starts_runit_on_calicos_services(calico: CalicoBuild, tmp_path: Path) -> None:
    root = extract(calico, "node", tmp_path)
    service = root / "etc" / "service"
    assert service.is_dir() and not service.is_symlink() and not (service / "enabled").exists()  # rc.local creates it
    for script in (root / "etc" / "rc.local", root / "usr" / "sbin" / "start_runit", service / "available" / "felix" / "run", service / "available" / "felix" / "log" / "run"):
        assert os.access(script, os.X_OK), f"{script.relative_to(root)} is not executable"


@needs_root
def test_calico_node_runs_inside_its_image(calico: CalicoBuild, tmp_path: Path) -> None:
    """calico-node is cgo: it runs only if the image holds the libraries it links (libelf, zlib, libpcap). libbpf
    reads /sys when felix's packages initialize, so the host's is bound in, in a mount namespace of the command's
    own (as the runtime gives every container a /sys)."""
    root = extract(calico, "node", tmp_path)
    script = f"mount --bind /sys {shlex.quote(str(root / 'sys'))} && exec chroot {shlex.quote(str(root))} /usr/bin/calico-node -v"
    assert run("unshare", "--mount", "--propagation", "private", "sh", "-c", script).strip() == CALICO


@needs_root
def test_the_smoke_image_serves_debians_page_on_port_80(calico: CalicoBuild, tmp_path: Path) -> None:
    """The image's own entrypoint in a network namespace of its own (no server in the root namespace); the pid
    namespace ends nginx and its workers with the shell."""
    root = extract(calico, "nginx", tmp_path)
    entrypoint = " ".join(shlex.quote(a) for a in EXPECTED_CONFIG["nginx"][0])
    fetch = "import urllib.request as u; print(u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:80/', timeout=2).read().decode())"
    script = f"""
        ip link set lo up
        chroot {shlex.quote(str(root))} {entrypoint} &
        for _ in $(seq 50); do {shlex.quote(sys.executable)} -c {shlex.quote(fetch)} 2>/dev/null && exit 0; sleep 0.2; done
        exit 1
    """
    done = subprocess.run(["unshare", "--net", "--pid", "--fork", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Welcome to nginx!" in done.stdout


def test_the_served_operator_manifest_runs_the_built_operator(calico: CalicoBuild) -> None:
    manifests = calico.www / WWW_PATH / "manifests"
    documents = [d for d in yaml.safe_load_all((manifests / "tigera-operator.yaml").read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "tigera-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{OPERATOR_IMAGE}:{OPERATOR}"
    assert {"name": INIT_IMAGE_ENV, "value": OPERATOR} in container["env"]
    assert "v1.34.13" not in (manifests / "tigera-operator.yaml").read_text()
    # Both manifests carry the CRDs the operator bundles (the real binary's list), no more, no less.
    bundled = {d["metadata"]["name"] for d in yaml.safe_load_all(run(calico.bin / "operator", "--print-calico-crds=all")) if d}
    for name in ("tigera-operator.yaml", "operator-crds.yaml"):
        crds = {d["metadata"]["name"] for d in yaml.safe_load_all((manifests / name).read_text()) if d and d["kind"] == "CustomResourceDefinition"}
        assert crds == bundled, name


def test_the_manifest_records_versions_images_times_and_sizes(calico: CalicoBuild) -> None:
    manifest = calico.manifest
    assert manifest["versions"]["calico"] == CALICO and manifest["versions"]["operator"] == OPERATOR
    assert manifest["versions"]["calico-source"].endswith(PINS["calico"]["version"])
    assert manifest["versions"]["nginx"].startswith(PINS["smoke"]["tag"] + "-")
    assert set(manifest["images"]) == set(EXPECTED_CONFIG)
    assert set(manifest["seconds"]) == {"operator", "calico", "calico-node", "bases", "images", "manifests", "total"}
    assert manifest["bytes"] > sum(manifest["image_bytes"].values()) > 0
    assert sorted(manifest["manifests"]) == [f"{WWW_PATH}/manifests/operator-crds.yaml", f"{WWW_PATH}/manifests/tigera-operator.yaml"]


def layer_blob(calico: CalicoBuild, name: str) -> Path:
    index = json.loads((calico.images / name / "index.json").read_text())
    blobs = calico.images / name / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return blobs / manifest["layers"][0]["digest"].split(":")[1]


def layer_files(calico: CalicoBuild, name: str) -> set[str]:
    return {line.removeprefix("./").rstrip("/") for line in run("tar", "-tzf", layer_blob(calico, name)).split()}


def extract(calico: CalicoBuild, name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    root.mkdir()
    run("tar", "-xzf", layer_blob(calico, name), "-C", root, "--numeric-owner")
    return root


@pytest.fixture(autouse=True)
def _no_stray_trees(tmp_path: Path) -> Iterator[None]:
    """Extracted roots are large: gone after each test, whatever its outcome."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("scale", ["1", "4"])
def test_the_rendered_kustomization_builds_the_served_operator_manifest(calico: CalicoBuild, tmp_path: Path, scale: str) -> None:
    """What calico.sh runs on the control plane (`kubectl kustomize` of the stack's kustomization beside the served
    manifest), with the built kubectl, the built operator parsing the command it gets."""
    from components.calico import render_operator_kustomization
    from lab.mirror import require_mirror
    from tests.test_kubeadm_config_real import config_for

    config = config_for(accelerator="tcg", timeoutScale=scale)
    shutil.copy(calico.www / WWW_PATH / "manifests" / "tigera-operator.yaml", tmp_path / "tigera-operator.yaml")
    (tmp_path / "kustomization.yaml").write_text(render_operator_kustomization(config))
    built = [d for d in yaml.safe_load_all(run(require_mirror().root / "bin" / "kubectl", "kustomize", tmp_path)) if d]
    # The CRDs go only with operator-crds.yaml, which calico.sh applies first (the test above: both files carry the same).
    assert [d["metadata"]["name"] for d in built if d["kind"] == "CustomResourceDefinition"] == []
    assert {d["kind"] for d in built} == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}
    (deployment,) = [d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "tigera-operator"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{config.kubernetes.calico_registry}tigera/operator:{OPERATOR}"
    if scale == "1":
        assert container["command"] == ["operator"] and "strategy" not in deployment["spec"]
        return
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["command"] == ["operator", "--enable-leader-election=false"]
    assert "Operator: " in run(calico.bin / "operator", *container["command"][1:], *container.get("args", []), "--version")


def undeclared_keys(value: object, schema: dict, path: str = "") -> list[str]:
    """Keys of `value` that `schema` (a CRD's structural OpenAPI schema) does not declare: the API server would drop
    them without an error, so a misspelled field would be a setting that silently does nothing."""
    if isinstance(value, list):
        return [key for index, item in enumerate(value) for key in undeclared_keys(item, schema.get("items", {}), f"{path}[{index}]")]
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
        return []
    declared = schema.get("properties", {})
    return [f"{path}.{key}" for key in value if key not in declared] + [
        key for key, item in value.items() if key in declared for key in undeclared_keys(item, declared[key], f"{path}.{key}")
    ]


def calico_documents(rendered: str) -> list[dict]:
    """The operator's kinds among CALICO_INSTALLATION's documents (on slow hosts a built-in admission policy comes
    first: tests/test_calico_probe_policy_real.py checks it against the real API server)."""
    return [d for d in yaml.safe_load_all(rendered) if d["apiVersion"].startswith("operator.tigera.io/")]


def schemas_of(documents: list[dict], crds: list[dict]) -> list[dict]:
    """The openAPIV3Schema of each document's kind at v1, from `crds`."""
    schemas = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"]): version["schema"]["openAPIV3Schema"]
        for crd in crds
        for version in crd["spec"]["versions"]
        if version["name"] == "v1"
    }
    return [schemas[(document["apiVersion"].split("/")[0], document["kind"])] for document in documents]


def test_the_rendered_installation_is_valid_for_the_served_crds(calico: CalicoBuild) -> None:
    """Every document calico.sh applies from CALICO_INSTALLATION against the openAPIV3Schema of its CRD in the served
    operator-crds.yaml: types, enums and patterns (jsonschema), and no field the CRD does not declare."""
    import jsonschema

    from components.calico import render_calico_installation
    from tests.test_kubeadm_config_real import config_for

    crds = [d for d in yaml.safe_load_all((calico.www / WWW_PATH / "manifests" / "operator-crds.yaml").read_text()) if d]
    documents = calico_documents(render_calico_installation(config_for(accelerator="tcg", timeoutScale="4")))
    assert [d["kind"] for d in documents] == ["Installation", "APIServer"]
    for document, schema in zip(documents, schemas_of(documents, crds)):
        jsonschema.validate({"spec": document["spec"]}, {**schema, "required": []})
        assert undeclared_keys(document["spec"], schema["properties"]["spec"]) == [], document["kind"]
    # The field this relies on is the one that reaches calico-node's container.
    node_containers = documents[0]["spec"]["calicoNodeDaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert node_containers == [{"name": "calico-node", "resources": {"requests": {"cpu": "250m"}}}]


def without_string_descriptions(value: object) -> object:
    """`value` with every string-valued "description" key dropped, at any depth: blunter than the stripper (which
    walks schema keywords only), so the two agree on Calico's CRDs only if the stripper dropped nothing else."""
    if isinstance(value, dict):
        return {k: without_string_descriptions(v) for k, v in value.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(value, list):
        return [without_string_descriptions(item) for item in value]
    return value


def run_description_stripper(source: Path, tmp_path: Path) -> list[dict]:
    """calico.sh's strip_schema_descriptions (its Python, as the node runs it) on `source`."""
    from components.steps import SCRIPT_DIR

    script = (SCRIPT_DIR / "calico.sh").read_text()
    program = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    stripped = tmp_path / "operator-crds.json"
    subprocess.run([sys.executable, "-c", program, str(source), str(stripped)], check=True, timeout=120)
    listed = json.loads(stripped.read_text())
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    return listed["items"]


def test_the_crds_without_descriptions_keep_everything_else_of_the_served_ones(calico: CalicoBuild, tmp_path: Path) -> None:
    """What a slow host applies: the served operator-crds.yaml with its schemas' descriptions gone and nothing else
    changed, a quarter of the size or less; the rendered Installation still validates against it."""
    import jsonschema

    from components.calico import render_calico_installation
    from tests.test_kubeadm_config_real import config_for

    source = calico.www / WWW_PATH / "manifests" / "operator-crds.yaml"
    released = [d for d in yaml.safe_load_all(source.read_text()) if d]
    stripped = run_description_stripper(source, tmp_path)
    assert [d["metadata"]["name"] for d in stripped] == [d["metadata"]["name"] for d in released]
    assert len(json.dumps(stripped)) * 4 < len(json.dumps(released))
    for before, after in zip(released, stripped):
        versions = zip(before["spec"]["versions"], after["spec"]["versions"], strict=True)
        expected = [{**v, "schema": {"openAPIV3Schema": without_string_descriptions(v["schema"]["openAPIV3Schema"])}} for v, _ in versions]
        # Printer columns keep their descriptions: only the schemas lose theirs.
        assert after == {**before, "spec": {**before["spec"], "versions": expected}}, before["metadata"]["name"]
    documents = calico_documents(render_calico_installation(config_for(accelerator="tcg", timeoutScale="4")))
    for document, schema in zip(documents, schemas_of(documents, stripped)):
        jsonschema.validate({"spec": document["spec"]}, {**schema, "required": []})


def test_the_stripper_keeps_a_property_named_description_and_data_that_has_one(tmp_path: Path) -> None:
    """Only schema keywords lose their description: not a field called description, nor a default that holds one."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "gone",
                            "type": "object",
                            "properties": {
                                "description": {"description": "gone", "type": "string"},
                                "labels": {"type": "object", "additionalProperties": {"description": "gone", "type": "string"}},
                                "items": {"type": "array", "items": {"description": "gone", "anyOf": [{"description": "gone"}]}},
                                "spec": {"type": "object", "default": {"description": "kept"}, "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ]
        },
    }
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump_all([crd, {"kind": "ConfigMap", "data": {"description": "kept"}}]))
    stripped_crd, config_map = run_description_stripper(tmp_path / "crd.yaml", tmp_path)
    properties = stripped_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert properties == {
        "description": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "items": {"type": "array", "items": {"anyOf": [{}]}},
        "spec": {"type": "object", "default": {"description": "kept"}, "x-kubernetes-preserve-unknown-fields": True},
    }
    assert config_map == {"kind": "ConfigMap", "data": {"description": "kept"}}
    assert "gone" not in json.dumps(stripped_crd)
