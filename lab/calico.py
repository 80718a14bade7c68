"""The Calico part of the lab mirror: the tigera operator and the Calico images it deploys, built on this machine from
Go modules and Debian packages, cached by content beside the Kubernetes mirror (lab/mirror.py).

- tigera/operator v1.35.0 (lab/gomod/calico-operator), and calico/node, cni, typha, kube-controllers and apiserver
  from github.com/projectcalico/calico (lab/gomod/calico), tagged v3.28.1: the tag that operator computes
  (lab/pins.yaml, calico, says why the source is a later commit of the release-v3.28 branch).
- Exactly the images the stack's Installation deploys (bgp Disabled, VXLANCrossSubnet, flexVolumePath and
  kubeletVolumePluginPath None, an APIServer). Not built: pod2daemon-flexvol, csi and node-driver-registrar (that
  Installation turns them off; the registrar's module is refused anyway); BIRD (BGP is off, and its C source is no
  Go module); the BPF objects of /usr/lib/calico/bpf (they need clang, which the lab does not install; the iptables
  dataplane loads them only to accelerate untracked policies with XDP, which the lab has none of).
- lab/nginx:<Debian's nginx version>: the smoke test's workload, Debian bookworm's nginx-light.
- www/calico/manifests/: the module's operator-crds.yaml and tigera-operator.yaml, the latter running operator
  v1.35.0 rather than the v1.34.13 the branch names.

lab/mirror_services.py pushes the images at the registry's root (Installation.registry is "<registry>/", to which
the operator appends calico/<name>) and serves www/calico/ on the mirror's HTTP port. The entry is named after a
digest of the pin file, the wrapper modules, the code that builds it and the Go version (lab/build.py's keyed
cache); manifest.json records versions, image refs, the build's per-part seconds and bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from components import yaml_io
from lab import oci
from lab.build import COMPLETE, Log, digest_files, ensure_keyed, go_build, go_version, run, timed, tree_size
from lab.errors import LabError
from lab.image import SUITE, debian_mirror
from lab.mirror import ServedBuild, debian_base, module_info, remove_tree, selected_version
from lab.paths import cache_root
from lab.toolchain import LAB_DIR, PINS_FILE, load_pins

# What the entry is built by: mirror.py lends debian_base and module_info, build.py go_build, oci.py the layouts.
BUILD_CODE = ("calico.py", "mirror.py", "oci.py", "build.py")
WRAPPERS = ("operator", "calico", "cni_plugins")  # the pins' parts that name a wrapper module
WWW_PATH = "calico"  # under www/: the stack's calicoManifestUrl is http://<lab>:8080/calico/manifests
OPERATOR_IMAGE = "quay.io/tigera/operator"  # as tigera-operator.yaml names it; the stack rewrites its registry
INIT_IMAGE_ENV = "TIGERA_OPERATOR_INIT_IMAGE_VERSION"
CNI_PLUGINS_MODULE = "github.com/containernetworking/plugins"
# Every go command of this build. No ",direct": a module the proxy refuses would fall back to git on github.com.
# GONOSUMDB: the checksum database lacks some tigera and projectcalico versions (the wrappers' go.sum pins them).
# -mod=mod: the wrappers are upstream's go.mod files with a require added, which go may complete; -buildvcs=false:
# nothing is stamped from wherever the build runs.
GO_ENV = {"GOPROXY": "https://proxy.golang.org", "GONOSUMDB": "github.com/tigera,github.com/projectcalico", "GOFLAGS": "-mod=mod -buildvcs=false"}
HOST_TOOLS = (("gcc", "gcc"), ("make", "make"), ("debootstrap", "debootstrap"), ("dpkg-query", "dpkg"))
# calico-node is cgo: the libbpf it links (source in the calico module) needs libelf and zlib, felix's filters pcap.
HOST_HEADERS = (("gelf.h", "libelf-dev"), ("zlib.h", "zlib1g-dev"), ("pcap.h", "libpcap-dev"))
# The images `operator --print-images` lists that the stack's Installation does not deploy, and why.
NOT_DEPLOYED = {
    "calico/pod2daemon-flexvol": "flexVolumePath: None",
    "calico/csi": "kubeletVolumePluginPath: None",
    "calico/node-driver-registrar": "kubeletVolumePluginPath: None",
    "calico/key-cert-provisioner": "only with certificateManagement",
    "calico/cni-windows": "Windows nodes only",
    "calico/node-windows": "Windows nodes only",
}
# calico/base's users: root and the uids the images run as (typha and kube-controllers 999, the apiserver and the
# operator 10001), so that looking up the running user succeeds.
BASE_USERS = (("root", 0, "/root"), ("calico", 999, "/nonexistent"), ("nonroot", 10001, "/nonexistent"))


def _stderr(message: str) -> None:
    print(f"lab calico: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CalicoBuild(ServedBuild):
    """A built Calico entry."""

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def image_refs(self) -> dict[str, str]:
        """Layout name under images/ -> the image's path and tag in the lab registry (node -> calico/node:v3.28.1)."""
        return dict(self.manifest["images"])


def calico_root() -> Path:
    return cache_root() / "calico"


def calico_key() -> str:
    pins = load_pins()["calico"]
    modules = [p for part in WRAPPERS for p in _wrapper(pins[part]).rglob("*") if p.is_file()]
    code = [LAB_DIR / name for name in BUILD_CODE]
    return digest_files(LAB_DIR, [PINS_FILE, *modules, *code], go_version())


def find_calico() -> CalicoBuild | None:
    root = calico_root() / calico_key()
    return CalicoBuild(root) if (root / COMPLETE).is_file() else None


def require_calico() -> CalicoBuild:
    built = find_calico()
    if built is None:
        raise LabError("the lab's Calico is not built for this clone: run `python3 -m lab mirror build`")
    return built


def ensure_calico(force: bool = False, log: Log = _stderr) -> CalicoBuild:
    _check_prerequisites()
    final = ensure_keyed(calico_root(), calico_key(), lambda scratch: _build(scratch, load_pins()["calico"], log), force=force, log=log)
    built = CalicoBuild(final)
    log(f"calico {built.summary()}")
    return built


def smoke_image_ref() -> str:
    """The smoke test's image in the lab registry (lab/nginx:1.22.1): pinned, so known before anything is built."""
    smoke = load_pins()["calico"]["smoke"]
    return f"{smoke['image']}:{smoke['tag']}"


def deployed_images(operator: Path, calico_version: str, operator_version: str) -> list[str]:
    """What the real operator deploys for the stack's Installation, as registry paths (calico/node:v3.28.1, ...): its
    own list of the default images (`--print-images=list`) with this Calico's tag, less NOT_DEPLOYED, plus itself."""
    listed = run([str(operator), "--print-images=list"]).split()
    itself = f"{OPERATOR_IMAGE}:{operator_version}"
    if itself not in listed:
        raise LabError(f"{operator} does not list {itself} among its images: it is not operator {operator_version}")
    calico = {ref.split("/", 1)[1] for ref in listed if ref.startswith("docker.io/calico/") and ref.endswith(f":{calico_version}")}
    return sorted({ref for ref in calico if ref.split(":")[0] not in NOT_DEPLOYED} | {itself.split("/", 1)[1]})


def rewrite_operator_manifest(text: str, version: str) -> str:
    """tigera-operator.yaml with its operator Deployment running operator `version`: the image's tag (the repository
    stays OPERATOR_IMAGE) and the version the operator gives its init image. Anything else is unchanged; a manifest
    without exactly that container and variable is refused rather than served half-rewritten."""
    documents = [document for document in yaml.safe_load_all(text) if document is not None]
    containers = [
        container
        for document in documents
        if document.get("kind") == "Deployment" and document["metadata"]["name"] == "tigera-operator"
        for container in document["spec"]["template"]["spec"]["containers"]
        if container["name"] == "tigera-operator"
    ]
    if len(containers) != 1:
        raise LabError(f"tigera-operator.yaml has {len(containers)} tigera-operator containers in a tigera-operator Deployment, not one")
    container = containers[0]
    repository, _, _ = container["image"].rpartition(":")
    if repository != OPERATOR_IMAGE:
        raise LabError(f"tigera-operator.yaml runs {container['image']}, not {OPERATOR_IMAGE}: the stack rewrites only that name")
    variables = [variable for variable in container.get("env", []) if variable["name"] == INIT_IMAGE_ENV]
    if len(variables) != 1:
        raise LabError(f"tigera-operator.yaml's operator container sets {INIT_IMAGE_ENV} {len(variables)} times, not once")
    container["image"] = f"{OPERATOR_IMAGE}:{version}"
    variables[0]["value"] = version
    return yaml_io.dump_all(documents)


def calico_ldflags(version: str, pseudo_version: str) -> str:
    """Every component's version variables (from their Makefiles), so each reports `version`. The revision and the
    build date are the module commit's, read from its pseudo-version: the same pins give the same binaries. One
    set for every binary: the linker ignores variables a binary does not have."""
    base, revision = pseudo_version.rsplit("-", 1)
    date = datetime.strptime(base.rsplit(".", 1)[1], "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%S+0000")
    calico = "github.com/projectcalico/calico"
    values = {
        "main.VERSION": version,  # kube-controllers, check-status, the CNI plugin and its installer
        f"{calico}/typha/pkg/buildinfo.GitVersion": version,
        f"{calico}/typha/pkg/buildinfo.GitRevision": revision,
        f"{calico}/typha/pkg/buildinfo.BuildDate": date,
        f"{calico}/apiserver/cmd/apiserver/server.VERSION": version,
        f"{calico}/apiserver/cmd/apiserver/server.GIT_DESCRIPTION": version,
        f"{calico}/apiserver/cmd/apiserver/server.GIT_REVISION": revision,
        f"{calico}/apiserver/cmd/apiserver/server.BUILD_DATE": date,
        f"{calico}/node/pkg/lifecycle/startup.VERSION": version,
        f"{calico}/node/buildinfo.GitVersion": version,
        f"{calico}/node/buildinfo.GitRevision": revision,
        f"{calico}/node/buildinfo.BuildDate": date,
    }
    return " ".join(f"-X {name}={value}" for name, value in values.items())


def _wrapper(part: Mapping) -> Path:
    return LAB_DIR.parent / part["wrapper"]


def _check_prerequisites() -> None:
    go_version()
    missing = [f"{tool} (apt-get install {package})" for tool, package in HOST_TOOLS if shutil.which(tool) is None]
    missing += [f"{header} (apt-get install {package})" for header, package in HOST_HEADERS if not (Path("/usr/include") / header).is_file()]
    if missing:
        raise LabError(f"building the lab's Calico needs {', '.join(missing)}")


def _build(scratch: Path, pins: Mapping, log: Log) -> None:
    seconds: dict[str, float] = {}
    bins, source = scratch / "bin", scratch / "src"
    bins.mkdir(parents=True)
    for part in WRAPPERS:
        shutil.copytree(_wrapper(pins[part]), source / part)
    calico = pins["calico"]
    calico_module = Path(module_info(calico["module"], calico["version"], GO_ENV)["Dir"])
    operator = pins["operator"]
    with timed(seconds, "operator", log):
        ldflags = f"-X {operator['module']}/version.VERSION={operator['version']}"
        go_build(source / "operator", operator["module"], bins / "operator", ldflags=ldflags, tags="osusergo,netgo", env=GO_ENV)
    ldflags = calico_ldflags(pins["version"], calico["version"])
    with timed(seconds, "calico", log):
        commands = ["typha/cmd/calico-typha", "kube-controllers/cmd/kube-controllers", "kube-controllers/cmd/check-status", "cni-plugin/cmd/calico", "cni-plugin/cmd/install", "apiserver/cmd/apiserver"]
        go_build(source / "calico", [f"{calico['module']}/{c}" for c in commands], bins, ldflags=ldflags, env=GO_ENV)
        cni_version = selected_version(source / "cni_plugins", CNI_PLUGINS_MODULE, GO_ENV)  # what its binaries say
        plugins = [f"{CNI_PLUGINS_MODULE}/plugins/{p}" for p in pins["cni_plugins"]["plugins"]]
        go_build(source / "cni_plugins", plugins, bins / "cni", ldflags=f"-X {CNI_PLUGINS_MODULE}/pkg/utils/buildversion.BuildVersion={cni_version}", env=GO_ENV)
    with timed(seconds, "calico-node", log):
        libbpf = _build_libbpf(calico_module, scratch / "libbpf")
        cgo = {"CGO_CFLAGS": f"-O2 -I{libbpf / 'src'} -I{libbpf / 'include' / 'uapi'}", "CGO_LDFLAGS": f"-L{libbpf / 'src' / 'amd64'} -lbpf -lelf -lz"}
        go_build(source / "calico", [f"{calico['module']}/node/cmd/{c}" for c in ("calico-node", "mountns")], bins, ldflags=ldflags, cgo=True, env={**GO_ENV, **cgo})
    shutil.rmtree(source)
    shutil.rmtree(libbpf)
    versions = {
        **_check_versions(bins, pins),
        "calico-source": f"{calico['module']}@{calico['version']}",
        "calico-api": calico["replaces"]["github.com/projectcalico/api"],
        "cni-plugins": cni_version,
    }
    with timed(seconds, "bases", log):
        node_base, nginx_base, versions["nginx"] = _bases(scratch, calico_module, pins, log)
    with timed(seconds, "images", log):
        images = _build_images(scratch, bins, calico_module, (node_base, nginx_base), pins, log)
    with timed(seconds, "manifests", log):
        manifests = _write_manifests(calico_module / "manifests", scratch / "www" / WWW_PATH / "manifests", operator["version"])
    seconds["total"] = round(sum(seconds.values()), 1)
    manifest = {
        "versions": versions,
        "images": images,
        "manifests": manifests,
        "seconds": seconds,
        "image_bytes": {name: tree_size(scratch / "images" / name) for name in images},
        "bytes": tree_size(scratch),
        "go": go_version(),
    }
    (scratch / COMPLETE).write_text(json.dumps(manifest, indent=2) + "\n")


def _build_libbpf(calico_module: Path, work: Path) -> Path:
    """libbpf as calico-node links it: the v1.2 source the module vendors (felix/bpf-gpl/include/libbpf), a static
    archive in src/amd64, where libbpf.go's cgo flags look. Copied without the module cache's read-only modes."""
    run(["cp", "-R", "--no-preserve=mode", str(calico_module / "felix" / "bpf-gpl" / "include" / "libbpf"), str(work)])
    (work / "src" / "amd64").mkdir()
    run(["make", "-C", str(work / "src"), f"-j{os.cpu_count() or 1}", "BUILD_STATIC_ONLY=1", "OBJDIR=amd64"])
    return work


def _check_versions(bins: Path, pins: Mapping) -> dict[str, str]:
    """What the built binaries say they are; a mismatch with the pins fails the build rather than the cluster. The
    operator's own Calico version is the tag it will ask for: it must be the one the images carry."""
    version, operator_version = pins["version"], pins["operator"]["version"]
    operator = _fields(run([str(bins / "operator"), "--version"]))
    said = {
        "calico-node": run([str(bins / "calico-node"), "-v"]).strip(),
        "calico-typha": _fields(run([str(bins / "calico-typha"), "--version"])).get("Version", ""),
        "kube-controllers": run([str(bins / "kube-controllers"), "--version"]).strip(),
        "calico (CNI)": run([str(bins / "calico"), "-v"]).strip(),
        "operator's Calico": operator.get("Calico", ""),
    }
    wrong = {name: value for name, value in said.items() if value != version}
    if operator.get("Operator") != operator_version:
        wrong["operator"] = operator.get("Operator", "")
    if wrong:
        raise LabError(f"built binaries say {wrong}, the pins are Calico {version} and operator {operator_version}: check the version ldflags and lab/pins.yaml")
    return {"calico": version, "operator": operator_version}


def _fields(text: str) -> dict[str, str]:
    """`Name: value` lines (operator --version, calico-typha --version) as a mapping."""
    return {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in text.splitlines()) if value}


def _bases(scratch: Path, calico_module: Path, pins: Mapping, log: Log) -> tuple[Path, Path, str]:
    """The Debian roots of the node and the smoke image; returns them and the nginx package's version, which must
    be the smoke image's pinned tag."""
    mirror = debian_mirror(SUITE)
    node_base = debian_base(scratch / "node-base", pins["node_base_packages"], mirror, log)
    _add_node_files(node_base, calico_module / "node" / "filesystem")
    smoke = pins["smoke"]
    nginx_base = debian_base(scratch / "nginx-base", smoke["packages"], mirror, log)
    nginx = _package_version(nginx_base, smoke["packages"][0])
    if _upstream_version(nginx) != smoke["tag"]:
        raise LabError(f"{SUITE}'s {smoke['packages'][0]} is {nginx}, the smoke image's pinned tag is {smoke['tag']}: update lab/pins.yaml")
    (nginx_base / "var" / "log" / "nginx").mkdir(parents=True)  # nginx opens its logs there first; the base has no /var/log
    return node_base, nginx_base, nginx


def _build_images(scratch: Path, bins: Path, calico_module: Path, bases: tuple[Path, Path], pins: Mapping, log: Log) -> dict[str, str]:
    """The OCI layouts under images/, exactly the images the built operator deploys plus the smoke image; returns
    layout name -> registry ref."""
    node_base, nginx_base = bases
    base = _small_base(scratch / "base", node_base)
    version, operator_version, smoke = pins["version"], pins["operator"]["version"], pins["smoke"]
    # install copies all of /opt/cni/bin to the host; calico-ipam is the calico binary under the name it dispatches
    # on, as upstream ships it.
    cni_bin = {f"opt/cni/bin/{p.name}": p for p in sorted((bins / "cni").iterdir())}
    cni_bin |= {"opt/cni/bin/install": bins / "install", "opt/cni/bin/calico": bins / "calico", "opt/cni/bin/calico-ipam": bins / "calico"}
    typha = {"usr/bin/calico-typha": bins / "calico-typha", "etc/calico/typha.cfg": calico_module / "typha" / "docker-image" / "typha.cfg"}
    kube_controllers = {"usr/bin/kube-controllers": bins / "kube-controllers", "usr/bin/check-status": bins / "check-status"}
    kube_controllers |= _kube_controllers_state(scratch / "kube-controllers")
    node = {"usr/bin/calico-node": bins / "calico-node", "usr/bin/mountns": bins / "mountns"}
    specs = {
        "node": oci.ImageSpec("calico/node", version, files=node, tree=node_base, entrypoint=("/usr/sbin/start_runit",)),
        "cni": oci.ImageSpec("calico/cni", version, files={**base, **cni_bin}, entrypoint=("/opt/cni/bin/install",)),
        "typha": oci.ImageSpec("calico/typha", version, files={**base, **typha}, entrypoint=("/usr/bin/calico-typha",), user="999"),
        "kube-controllers": oci.ImageSpec("calico/kube-controllers", version, files={**base, **kube_controllers}, entrypoint=("/usr/bin/kube-controllers",), user="999"),
        "apiserver": oci.ImageSpec("calico/apiserver", version, files={**base, "code/apiserver": bins / "apiserver"}, entrypoint=("/code/apiserver",), user="10001:10001"),
        # tigera-operator.yaml runs `operator` from PATH.
        "operator": oci.ImageSpec("tigera/operator", operator_version, files={**base, "usr/bin/operator": bins / "operator"}, entrypoint=("/usr/bin/operator",), user="10001:10001"),
        "nginx": oci.ImageSpec(smoke["image"], smoke["tag"], tree=nginx_base, entrypoint=("/usr/sbin/nginx", "-g", "daemon off;")),
    }
    refs = {name: f"{spec.name}:{spec.tag}" for name, spec in specs.items()}
    wanted = deployed_images(bins / "operator", version, operator_version)
    built = sorted(ref for name, ref in refs.items() if name != "nginx")
    if built != wanted:
        raise LabError(f"operator {operator_version} deploys {wanted} for the stack's Installation, the build makes {built}")
    for name, spec in specs.items():
        log(f"image {refs[name]}")
        oci.write_layout(spec, scratch / "images" / name)
    for tree in bases:
        remove_tree(tree)
    shutil.rmtree(scratch / "base")
    shutil.rmtree(scratch / "kube-controllers")
    return refs


def _add_node_files(tree: Path, filesystem: Path) -> None:
    """The module's node/filesystem as upstream's Dockerfile copies it: etc/ onto /etc, sbin/* into /usr/sbin. The
    module zip keeps no modes: rc.local, the runit services' run scripts and sbin/ get their execute bits back."""
    # rc.local creates /etc/service/enabled and start_runit runs runsvdir on it: a directory of the image's own,
    # not Debian's symlink to runit's runsvdir (runit is no init here).
    service = tree / "etc" / "service"
    if service.is_symlink():
        service.unlink()
    service.mkdir(exist_ok=True)
    root = tree.resolve()
    for source in sorted(p for p in filesystem.rglob("*") if p.is_file()):
        inside = source.relative_to(filesystem)
        executable = inside.parts[0] == "sbin" or source.name in ("run", "rc.local")
        target = tree / "usr" / "sbin" / inside.name if inside.parts[0] == "sbin" else tree / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(root):  # a symlink in the tree must not lead out of it
            raise LabError(f"{target.parent} leads out of {tree}")
        shutil.copyfile(source, target)
        target.chmod(0o755 if executable else 0o644)


def _package_version(tree: Path, package: str) -> str:
    return run(["dpkg-query", f"--admindir={tree / 'var' / 'lib' / 'dpkg'}", "-W", "-f", "${Version}", package]).strip()


def _upstream_version(debian_version: str) -> str:
    """1.22.1 of 1.22.1-9+deb12u11 (and of an epoch's 1:1.22.1-9)."""
    return debian_version.split(":", 1)[-1].rsplit("-", 1)[0]


def _small_base(work: Path, node_base: Path) -> dict[str, Path]:
    """calico/base's files for the images of one static binary: the users and the CA bundle (the one Debian's
    ca-certificates generated in the node's base)."""
    work.mkdir(parents=True)
    (work / "passwd").write_text("".join(f"{name}:x:{uid}:{uid}:{name}:{home}:/sbin/nologin\n" for name, uid, home in BASE_USERS))
    (work / "group").write_text("".join(f"{name}:x:{uid}:\n" for name, uid, _ in BASE_USERS))
    shutil.copyfile(node_base / "etc" / "ssl" / "certs" / "ca-certificates.crt", work / "ca-certificates.crt")
    return {"etc/passwd": work / "passwd", "etc/group": work / "group", "etc/ssl/certs/ca-certificates.crt": work / "ca-certificates.crt"}


def _kube_controllers_state(work: Path) -> dict[str, Path]:
    """The files kube-controllers writes: its status (check-status reads it for the probes) and profiles. The
    operator runs it as 999 in group 0, and a layer's files are root's: group 0 may write them (upstream chowns
    them to 999)."""
    work.mkdir(parents=True)
    files = {"status/status.json": work / "status.json", "profiles/mem.pprof": work / "mem.pprof", "profiles/cpu.pprof": work / "cpu.pprof"}
    for path in files.values():
        path.touch()
        path.chmod(0o664)
    return files


def _write_manifests(source: Path, target: Path, operator_version: str) -> list[str]:
    """operator-crds.yaml as the module has it; tigera-operator.yaml running the operator this build made."""
    target.mkdir(parents=True)
    shutil.copyfile(source / "operator-crds.yaml", target / "operator-crds.yaml")
    (target / "tigera-operator.yaml").write_text(rewrite_operator_manifest((source / "tigera-operator.yaml").read_text(), operator_version))
    return sorted(f"{WWW_PATH}/manifests/{path.name}" for path in target.iterdir())

