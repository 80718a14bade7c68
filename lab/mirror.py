"""The lab mirror: what an air-gapped cluster installs from, built on this machine from source and cached by content.

- Kubernetes v1.34.x (kubeadm, kubelet, kubectl, the control-plane commands, kube-proxy) from k8s.io/kubernetes,
  crictl, the CNI plugins, etcd and CoreDNS from their Go modules; pause from its C source (lab/pins.yaml, mirror).
- `www/kubernetes/core/stable/v1.34/deb/`: a pkgs.k8s.io-style signed flat repository (lab/debs.py), so the stack's
  kubernetesAptMirror is `http://<lab>/kubernetes/core/stable`.
- `www/debian/`: a signed Debian archive with the closure of the packages the nodes install (osAptSources).
- `images/<name>/`: OCI layouts of exactly the images the built kubeadm lists for this version (`kubeadm config
  images list`), pushed by lab/mirror_services.py to the lab's registry under `k8s/`.

A mirror directory is named after a digest of the pin file, the mirror's wrapper modules, the code that builds it and
the Go version (lab/build.py's keyed cache); manifest.json records versions, the build's per-part seconds and bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import debs, oci
from lab.build import COMPLETE, Log, digest_files, ensure_keyed, go_build, go_version, run, timed, tree_size
from lab.errors import LabError
from lab.image import SUITE, assert_nothing_mounted_under, debian_mirror
from lab.paths import cache_root, images_root
from lab.toolchain import GOMOD_DIR, LAB_DIR, PINS_FILE, load_pins

MIRROR_MODULES = ("kubernetes", "etcd", "coredns", "cri-tools", "cni-plugins")
BUILD_CODE = ("mirror.py", "debs.py", "oci.py", "build.py")
IMAGE_PATH = "k8s"  # the registry path the images live under: imageRepository is <registry>/k8s
KUBERNETES_REPO_PATH = "kubernetes/core/stable"  # under www/: kubernetesAptMirror is http://<lab>/kubernetes/core/stable
HOST_TOOLS = (("gcc", "gcc"), ("dpkg-deb", "dpkg"), ("apt-ftparchive", "apt-utils"), ("gpg", "gnupg"), ("debootstrap", "debootstrap"))


def _stderr(message: str) -> None:
    print(f"lab mirror: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServedBuild:
    """A keyed build that lab/mirror_services.py serves: its manifest, www/ (over HTTP) and images/ (OCI layouts,
    pushed to the registry). The Kubernetes mirror and the Calico build (lab/calico.py) are two."""

    root: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / COMPLETE).read_text())

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def summary(self) -> str:
        """Where it is, what its build took per part, and its size: for the build's log line."""
        seconds = self.manifest["seconds"]
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
        return f"{self.root}: built in {seconds['total']:.0f} s ({parts}), {self.manifest['bytes'] / 2**20:.0f} MiB"


@dataclass(frozen=True)
class Mirror(ServedBuild):
    """A built mirror directory."""

    @property
    def kubeadm(self) -> Path:
        return self.root / "bin" / "kubeadm"

    def image_refs(self) -> list[str]:
        """`name:tag` of every image, as the registry serves them under IMAGE_PATH."""
        return list(self.manifest["images"])


def mirror_root() -> Path:
    return cache_root() / "mirror"


def mirror_key() -> str:
    modules = [p for name in MIRROR_MODULES for p in (GOMOD_DIR / name).rglob("*") if p.is_file()]
    code = [LAB_DIR / name for name in BUILD_CODE]
    return digest_files(LAB_DIR, [PINS_FILE, *modules, *code], go_version())


def find_mirror() -> Mirror | None:
    root = mirror_root() / mirror_key()
    return Mirror(root) if (root / COMPLETE).is_file() else None


def require_mirror() -> Mirror:
    mirror = find_mirror()
    if mirror is None:
        raise LabError("the lab mirror is not built for this clone: run `python3 -m lab mirror build`")
    return mirror


def ensure_mirror(force: bool = False, log: Log = _stderr) -> Mirror:
    missing = [f"{tool} (apt-get install {package})" for tool, package in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"building the lab mirror needs {', '.join(missing)}")
    final = ensure_keyed(mirror_root(), mirror_key(), lambda scratch: _build(scratch, load_pins()["mirror"], log), force=force, log=log)
    mirror = Mirror(final)
    log(f"mirror {mirror.summary()}")
    return mirror


def ensure_kubeadm(log: Log = _stderr) -> Path:
    """The built kubeadm alone (about a minute and a half cold), for checks that need only it, such as
    `kubeadm config validate` of the rendered configuration: the whole mirror's if it is built, else its own
    cache entry keyed by the kubernetes pins and wrapper module."""
    mirror = find_mirror()
    if mirror is not None:
        return mirror.kubeadm
    module = GOMOD_DIR / "kubernetes"
    kube = load_pins()["mirror"]["kubernetes"]
    key = digest_files(LAB_DIR, [*(p for p in module.rglob("*") if p.is_file())], json.dumps(kube, sort_keys=True), go_version())

    def build(scratch: Path) -> None:
        shutil.copytree(module, scratch / "src")
        commit = module_info("k8s.io/kubernetes", kube["version"]).get("Origin", {}).get("Hash", "")
        go_build(scratch / "src", "k8s.io/kubernetes/cmd/kubeadm", scratch / "kubeadm", ldflags=_kubernetes_ldflags(kube["version"], commit))
        shutil.rmtree(scratch / "src")
        (scratch / COMPLETE).write_text(json.dumps({"kubeadm": kube["version"]}) + "\n")

    return ensure_keyed(cache_root() / "kubeadm", key, build, log=log) / "kubeadm"


def _build(scratch: Path, pins: Mapping, log: Log) -> None:
    seconds: dict[str, float] = {}
    bins, cni = scratch / "bin", scratch / "cni"
    source = scratch / "src"
    for name in MIRROR_MODULES:
        shutil.copytree(GOMOD_DIR / name, source / name)
    _check_wrapper_pins(source, pins)
    kube = pins["kubernetes"]
    kube_module = module_info("k8s.io/kubernetes", kube["version"])
    with timed(seconds, "kubernetes", log):
        ldflags = _kubernetes_ldflags(kube["version"], kube_module.get("Origin", {}).get("Hash", ""))
        go_build(source / "kubernetes", [f"k8s.io/kubernetes/cmd/{c}" for c in kube["commands"]], bins, ldflags=ldflags)
    with timed(seconds, "etcd-coredns-crictl-cni", log):
        go_build(source / "etcd", "go.etcd.io/etcd/server/v3", bins / "etcd", ldflags="")
        go_build(source / "coredns", "github.com/coredns/coredns", bins / "coredns", ldflags="")
        go_build(source / "cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl", bins / "crictl", ldflags=f"-X sigs.k8s.io/cri-tools/pkg/version.Version={pins['cri_tools']['version']}")
        plugins = [line.split('"')[1] for line in (source / "cni-plugins" / "tools.go").read_text().splitlines() if line.strip().startswith('_ "')]
        go_build(source / "cni-plugins", plugins, cni, ldflags=f"-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={pins['cni_plugins']['version']}")
        _build_pause(Path(kube_module["Dir"]), pins["pause"]["version"], bins / "pause")
    shutil.rmtree(source)
    versions = _check_versions(bins, pins)
    key = debs.SigningKey.create(scratch / "gnupg")
    with timed(seconds, "kubernetes-packages", log):
        specs = debs.kubernetes_packages(
            bins, cni, versions["kubernetes"].lstrip("v"), pins["cri_tools"]["version"].lstrip("v"), pins["cni_plugins"]["version"].lstrip("v"), pins["package_revision"]
        )
        built = [debs.build_deb(spec, scratch / "deb-work", scratch / "debs") for spec in specs]
        minor = ".".join(versions["kubernetes"].lstrip("v").split(".")[:2])
        debs.write_flat_repository(scratch / "www" / KUBERNETES_REPO_PATH / f"v{minor}" / "deb", built, key)
    with timed(seconds, "debian-archive", log):
        mirror = debian_mirror(SUITE)
        closure = debs.download_closure(pins["debian_packages"], mirror, scratch / "apt")
        debs.write_debian_archive(scratch / "www" / "debian", closure, key)
        shutil.rmtree(scratch / "apt")
    with timed(seconds, "images", log):
        images = _build_images(scratch, bins, versions, pins, mirror, log)
    key.close()
    for scratch_only in (key.home, scratch / "debs", scratch / "deb-work", cni):  # cni/ is in kubernetes-cni's .deb
        shutil.rmtree(scratch_only)
    seconds["total"] = round(sum(seconds.values()), 1)
    manifest = {"versions": versions, "images": images, "seconds": seconds, "bytes": tree_size(scratch), "go": go_version()}
    (scratch / COMPLETE).write_text(json.dumps(manifest, indent=2) + "\n")


def _kubernetes_ldflags(version: str, commit: str) -> str:
    """What hack/lib/version.sh sets: without gitMajor/gitMinor kubeadm reports a placeholder and refuses configs."""
    major, minor = version.lstrip("v").split(".")[:2]
    values = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean", "gitCommit": commit}
    return " ".join(f"-X k8s.io/{pkg}.{name}={value}" for pkg in ("component-base/version", "client-go/pkg/version") for name, value in values.items() if value)


def module_info(module: str, version: str, env: Mapping[str, str] | None = None) -> dict:
    """`go mod download -json`: the module's directory in the cache and, from the proxy, the commit it was tagged at.
    `env`: the go settings of the module set it belongs to (lab/calico.py's), else the process's."""
    return json.loads(run(["go", "mod", "download", "-json", f"{module}@{version}"], env=None if env is None else {**os.environ, **env}))


def _build_pause(kubernetes_module: Path, version: str, output: Path) -> None:
    """pause from build/pause/linux/pause.c of the same kubernetes module, static, as its Makefile does."""
    source = kubernetes_module / "build" / "pause" / "linux" / "pause.c"
    run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{version}", "-o", str(output), str(source)])
    run(["strip", str(output)])


def selected_version(module_dir: Path, module: str, env: Mapping[str, str] | None = None) -> str:
    """The version of `module` a wrapper module's go.mod selects (`env`: as for module_info)."""
    return run(["go", "list", "-m", "-f", "{{.Version}}", module], cwd=module_dir, env=None if env is None else {**os.environ, **env}).strip()


def _check_wrapper_pins(source: Path, pins: Mapping) -> None:
    """Each wrapper module must select exactly the version its pin names: the version ldflags and the packages'
    versions come from the pins, so a wrapper that drifted would build other code under the pinned name."""
    drifted = []
    for name, part in (("kubernetes", "kubernetes"), ("etcd", "etcd"), ("coredns", "coredns"), ("cri-tools", "cri_tools"), ("cni-plugins", "cni_plugins")):
        module, pinned = pins[part]["module"], pins[part]["version"]
        selected = selected_version(source / name, module)
        if selected != pinned:
            drifted.append(f"lab/gomod/{name} selects {module} {selected}, the pin is {pinned}")
    if drifted:
        raise LabError("wrapper modules disagree with lab/pins.yaml: " + "; ".join(drifted))


def _check_versions(bins: Path, pins: Mapping) -> dict[str, str]:
    """What the built binaries say they are; a mismatch with the pins fails the build rather than the cluster."""
    kubeadm = run([str(bins / "kubeadm"), "version", "-o", "short"]).strip()
    kubelet = run([str(bins / "kubelet"), "--version"]).strip().split()[-1]
    want = pins["kubernetes"]["version"]
    if kubeadm != want or kubelet != want:
        raise LabError(f"built kubeadm says {kubeadm} and kubelet {kubelet}, the pin is {want}: check the version ldflags")
    return {
        "kubernetes": kubeadm,
        "etcd": pins["etcd"]["version"],
        "coredns": pins["coredns"]["version"],
        "pause": pins["pause"]["version"],
        "cri-tools": pins["cri_tools"]["version"],
        "cni-plugins": pins["cni_plugins"]["version"],
    }


def kubeadm_images(kubeadm: Path, version: str, repository: str) -> list[str]:
    """The real kubeadm's answer: every image `kubeadm init` pulls for this version from this repository."""
    out = run([str(kubeadm), "config", "images", "list", "--kubernetes-version", version, "--image-repository", repository])
    return out.split()


def _build_images(scratch: Path, bins: Path, versions: Mapping[str, str], pins: Mapping, mirror: str, log: Log) -> list[str]:
    wanted = kubeadm_images(bins / "kubeadm", versions["kubernetes"], IMAGE_PATH)
    by_name = {ref.split("/", 1)[1].split(":")[0]: ref.split(":")[1] for ref in wanted}
    expected_tags = {"etcd": pins["etcd"]["image_tag"], "coredns": pins["coredns"]["version"], "pause": pins["pause"]["version"]}
    wrong = {name: (by_name.get(name), tag) for name, tag in expected_tags.items() if by_name.get(name) != tag}
    if wrong:
        raise LabError(f"kubeadm {versions['kubernetes']} asks for other images than the pins build: {wrong} (asked, pinned); update lab/pins.yaml")
    proxy_base = debian_base(scratch / "kube-proxy-base", pins["kube_proxy_base_packages"], mirror, log)
    binary = {name: {f"usr/local/bin/{name}": bins / name} for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")}
    specs = {
        **{name: oci.ImageSpec(name, by_name[name], files=files) for name, files in binary.items()},
        "kube-proxy": oci.ImageSpec("kube-proxy", by_name["kube-proxy"], files={"usr/local/bin/kube-proxy": bins / "kube-proxy"}, tree=proxy_base),
        "coredns": oci.ImageSpec("coredns", by_name["coredns"], files={"coredns": bins / "coredns"}, entrypoint=("/coredns",)),
        "pause": oci.ImageSpec("pause", by_name["pause"], files={"pause": bins / "pause"}, entrypoint=("/pause",), user="65535:65535"),
    }
    if set(specs) != set(by_name):
        raise LabError(f"kubeadm asks for images {sorted(by_name)}, the mirror builds {sorted(specs)}")
    refs = []
    for name, spec in sorted(specs.items()):
        oci.write_layout(spec, scratch / "images" / name)
        refs.append(f"{name}:{spec.tag}")
    remove_tree(proxy_base)
    return refs


def debian_base(tree: Path, packages: list[str], mirror: str, log: Log) -> Path:
    """A Debian minbase with `packages` at `tree`, for an image's root (kube-proxy's tools, Calico's node);
    debootstrap runs the packages' scripts (iptables' alternatives). Logs, docs and apt's lists are left out."""
    debs_cache = images_root() / "debs"  # the guest image's download cache: most of these are in it already
    debs_cache.mkdir(parents=True, exist_ok=True)
    log(f"{tree.name}: debootstrap {SUITE} minbase + {', '.join(packages)}")
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", f"--cache-dir={debs_cache}", SUITE, str(tree), mirror])
    finally:
        assert_nothing_mounted_under(tree)
    # The runtime mounts /dev; device nodes in a layer are only trouble.
    shutil.rmtree(tree / "dev")
    (tree / "dev").mkdir()
    for unneeded in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt", "var/lib/apt/lists", "var/log"):
        shutil.rmtree(tree / unneeded, ignore_errors=True)
    return tree


def remove_tree(tree: Path) -> None:
    """Remove a debootstrapped tree, never across a mount left in it."""
    assert_nothing_mounted_under(tree)
    subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=True)
