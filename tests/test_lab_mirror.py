"""The built lab mirror (python3 -m lab mirror build): binaries that say the pinned versions, the images the real
kubeadm asks for, and apt repositories that apt itself accepts, signature included. Read with the real tools
(apt-get, gpgv, dpkg-deb, skopeo) against local files; nothing is served or fetched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from components.config import TimeoutScale
from components.kubeadm_config import control_plane_extra_args
from lab.debs import private_apt
from lab.errors import LabError
from lab.mirror import IMAGE_PATH, KUBERNETES_REPO_PATH, Mirror, kubeadm_images, require_mirror
from lab.toolchain import load_pins

pytestmark = pytest.mark.mirror
PINS = load_pins()["mirror"]
KUBE = PINS["kubernetes"]["version"]
MINOR = ".".join(KUBE.lstrip("v").split(".")[:2])


@pytest.fixture(scope="module")
def mirror() -> Mirror:
    try:
        return require_mirror()
    except LabError as error:
        pytest.fail(str(error))


def run(*argv: str | Path, **kwargs) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True, **kwargs).stdout


@pytest.mark.parametrize(
    ("binary", "args", "expected"),
    [
        ("kubeadm", ["version", "-o", "short"], KUBE),
        ("kubelet", ["--version"], f"Kubernetes {KUBE}"),
        ("kubectl", ["version", "--client"], f"Client Version: {KUBE}"),
        ("kube-apiserver", ["--version"], f"Kubernetes {KUBE}"),
        ("kube-proxy", ["--version"], f"Kubernetes {KUBE}"),
        ("etcd", ["--version"], f"etcd Version: {PINS['etcd']['version'].lstrip('v')}"),
        ("coredns", ["-version"], f"CoreDNS-{PINS['coredns']['version'].lstrip('v')}"),
        ("crictl", ["--version"], f"crictl version {PINS['cri_tools']['version']}"),
    ],
)
def test_binaries_report_their_pinned_versions(mirror: Mirror, binary: str, args: list[str], expected: str) -> None:
    assert expected in run(mirror.root / "bin" / binary, *args)


def test_images_are_exactly_what_the_real_kubeadm_lists(mirror: Mirror) -> None:
    listed = kubeadm_images(mirror.kubeadm, KUBE, IMAGE_PATH)
    assert sorted(ref.removeprefix(f"{IMAGE_PATH}/") for ref in listed) == sorted(mirror.image_refs())


@pytest.mark.parametrize("name", ["pause", "kube-proxy", "etcd"])
def test_image_layouts_are_linux_amd64_with_their_entrypoints(mirror: Mirror, name: str) -> None:
    ref = next(r for r in mirror.image_refs() if r.startswith(f"{name}:"))
    tag = ref.split(":")[1]
    layout = f"oci:{mirror.images / name}:{tag}"
    inspected = json.loads(run("skopeo", "inspect", layout))
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    config = json.loads(run("skopeo", "inspect", "--config", layout))["config"]
    if name == "pause":
        assert config["Entrypoint"] == ["/pause"] and config["User"] == "65535:65535"
    if name == "kube-proxy":  # a Debian base with the tools kube-proxy runs
        files = _layer_files(mirror, name, tag)
        assert {"usr/local/bin/kube-proxy", "usr/sbin/iptables", "usr/sbin/ipset", "usr/sbin/conntrack"} <= files
        assert not any(f.startswith("dev/") and f != "dev/" for f in files), "device nodes belong to the runtime, not the layer"


def _layer_files(mirror: Mirror, name: str, tag: str) -> set[str]:
    index = json.loads((mirror.images / name / "index.json").read_text())
    blobs = mirror.images / name / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    return {line.removeprefix("./") for line in run("tar", "-tzf", layer).split()}


@pytest.mark.parametrize(
    ("package", "version", "files", "depends"),
    [
        ("kubelet", f"{KUBE.lstrip('v')}-1.1", ["./usr/bin/kubelet", "./usr/lib/systemd/system/kubelet.service", "./etc/default/kubelet"], "kubernetes-cni"),
        ("kubeadm", f"{KUBE.lstrip('v')}-1.1", ["./usr/bin/kubeadm", "./usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"], "cri-tools"),
        ("kubectl", f"{KUBE.lstrip('v')}-1.1", ["./usr/bin/kubectl"], None),
        ("cri-tools", f"{PINS['cri_tools']['version'].lstrip('v')}-1.1", ["./usr/bin/crictl"], None),
        ("kubernetes-cni", f"{PINS['cni_plugins']['version'].lstrip('v')}-1.1", ["./opt/cni/bin/bridge", "./opt/cni/bin/portmap", "./opt/cni/bin/loopback"], None),
    ],
)
def test_packages_have_pkgs_k8s_io_names_versions_and_files(mirror: Mirror, package: str, version: str, files: list[str], depends: str | None) -> None:
    repo = mirror.www / KUBERNETES_REPO_PATH / f"v{MINOR}" / "deb"
    deb = repo / f"{package}_{version}_amd64.deb"
    assert deb.is_file(), f"{deb.name} is missing from {repo}: {sorted(p.name for p in repo.glob('*.deb'))}"
    fields = run("dpkg-deb", "-f", deb, "Package", "Version", "Depends")
    assert f"Package: {package}" in fields and f"Version: {version}" in fields
    if depends:
        assert depends in fields
    listing = run("dpkg-deb", "-c", deb)
    for path in files:
        assert f" {path}" in listing or f" {path}\n" in listing, f"{package} lacks {path}"


def _apt(tmp: Path, sources: str, keyring_source: Path) -> list[str]:
    """apt-get options for a private apt state reading `sources` (file: URLs), trusting only the mirror's key."""
    tmp.mkdir(parents=True, exist_ok=True)
    keyring = tmp / "mirror.gpg"
    run("gpg", "--batch", "--yes", "--dearmor", "--output", keyring, keyring_source)
    return private_apt(tmp, sources.format(keyring=keyring))


def test_apt_accepts_the_signed_kubernetes_repository_and_resolves_the_stacks_install(mirror: Mirror, tmp_path: Path) -> None:
    repo = mirror.www / KUBERNETES_REPO_PATH / f"v{MINOR}" / "deb"
    archive = mirror.www / "debian"
    options = _apt(
        tmp_path,
        f"deb [signed-by={{keyring}}] file:{repo}/ /\ndeb [signed-by={{keyring}}] file:{archive} bookworm main\n",
        repo / "Release.key",
    )
    update = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True)
    assert update.returncode == 0 and "NO_PUBKEY" not in update.stderr and "not signed" not in update.stderr, update.stderr
    policy = run("apt-cache", *options, "policy", "kubeadm")
    assert f"{KUBE.lstrip('v')}-1.1" in policy
    # What install-kube-packages.sh and the OS-archive runtime install, on a system with nothing installed:
    # every dependency must come from the two repositories.
    wanted = [f"kubelet={KUBE.lstrip('v')}-1.1", f"kubeadm={KUBE.lstrip('v')}-1.1", f"kubectl={KUBE.lstrip('v')}-1.1", "containerd", "docker.io"]
    simulated = subprocess.run(["apt-get", *options, "install", "--simulate", "--yes", *wanted], capture_output=True, text=True)
    assert simulated.returncode == 0, simulated.stdout[-2000:] + simulated.stderr
    assert "Inst kubeadm" in simulated.stdout and "Inst containerd" in simulated.stdout


def test_an_unsigned_repository_would_be_refused(mirror: Mirror, tmp_path: Path) -> None:
    """The signature check above can fail: with a key that did not sign the repository, apt refuses it."""
    other_home = tmp_path / "other-gnupg"
    other_home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(other_home), "PATH": "/usr/bin:/bin"}
    run("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-generate-key", "other <o@invalid>", "ed25519", "sign", "never", env=env)
    (tmp_path / "other.asc").write_text(run("gpg", "--batch", "--armor", "--export", env=env))
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)  # the agent gpg started for that home
    repo = mirror.www / KUBERNETES_REPO_PATH / f"v{MINOR}" / "deb"
    options = _apt(tmp_path / "apt", f"deb [signed-by={{keyring}}] file:{repo}/ /\n", tmp_path / "other.asc")
    update = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True)
    assert "NO_PUBKEY" in update.stderr or "not signed" in update.stderr or update.returncode != 0


@pytest.mark.parametrize("component", ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_the_components_parse_every_flag_the_stack_scales(mirror: Mirror, component: str) -> None:
    """kubeadm passes extraArgs on without knowing them (`kubeadm config validate` accepts any name): the component
    itself must, or its static pod exits at start. Flags are parsed before --version is acted on."""
    args = control_plane_extra_args(TimeoutScale(percent=2000))[component]
    flags = [f"--{arg['name']}={arg['value']}" for arg in args]
    done = subprocess.run([mirror.root / "bin" / component, *flags, "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    refused = subprocess.run([mirror.root / "bin" / component, "--no-such-flag=1", "--version"], capture_output=True, text=True)
    assert refused.returncode != 0 and "no-such-flag" in refused.stderr  # the check can fail


@pytest.mark.parametrize("percent", [150, 400, 2000])  # timeoutScale 1.5, 4 and its maximum, 20
def test_the_built_etcd_serves_with_the_raft_timing_the_stack_scales(mirror: Mirror, tmp_path: Path, percent: int) -> None:
    """etcd checks its raft timing only when it starts (election timeout at least 5 heartbeats, at most 50 s): start
    the built etcd with what the stack renders, on loopback ports, and read its /health."""
    import socket
    import time
    import urllib.request

    args = control_plane_extra_args(TimeoutScale(percent=percent))["etcd"]
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    client, peer = (f"http://127.0.0.1:{port}" for port in ports)
    argv = [
        mirror.root / "bin" / "etcd", "--data-dir", tmp_path / "etcd", "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}",
        *(f"--{arg['name']}={arg['value']}" for arg in args),
    ]
    with (tmp_path / "etcd.log").open("w") as log:
        etcd = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline_at = time.monotonic() + 60
        health = None
        while health is None and etcd.poll() is None and time.monotonic() < deadline_at:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=5) as answer:
                    health = json.loads(answer.read())
            except OSError:
                time.sleep(0.5)
        assert health == {"health": "true", "reason": ""}, (tmp_path / "etcd.log").read_text()[-2000:]
    finally:
        etcd.kill()
        etcd.wait()
    milliseconds = {arg["name"]: int(arg["value"]) for arg in args}
    assert milliseconds["election-timeout"] >= 5 * milliseconds["heartbeat-interval"]
