"""Debian packages and apt repositories of the lab mirror.

- The Kubernetes packages, named, versioned and laid out as pkgs.k8s.io's (kubernetes/release, cmd/krel/templates/
  latest): kubelet with its unit and /etc/default/kubelet, kubeadm with the kubelet drop-in that starts it with
  kubeadm's flags, kubectl, cri-tools and kubernetes-cni, at versions like 1.34.4-1.1, in a flat repository
  (`deb [signed-by=...] <url>/v1.34/deb/ /`) with InRelease, Release.gpg and Release.key, as the stack expects.
- A Debian archive (dists/bookworm/main, pool/main) holding the whole dependency closure of the packages the nodes
  install (the OS-archive container runtime and the kube packages' dependencies), fetched with apt from the host's
  bookworm mirror, signed with the same lab key and served as the nodes' only OS package source.

The renderers are pure; building runs dpkg-deb, apt-get, apt-ftparchive and gpg.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.build import run

SUITE = "bookworm"
ARCH = "amd64"

# pkgs.k8s.io's unit and drop-in (krel templates), unchanged: the stack's scripts rely on exactly this wiring.
KUBELET_SERVICE = """\
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROP_IN = """\
# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

# Reload systemd after the unit files arrive, as the real packages' maintainer scripts do; nothing else.
_RELOAD_POSTINST = """\
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
"""


@dataclass(frozen=True)
class DebSpec:
    """One binary package: control fields and the files it installs (path inside the package -> host file or text)."""

    name: str
    version: str
    description: str
    depends: Sequence[str] = ()
    files: Mapping[str, Path | str] = field(default_factory=dict)
    conffiles: Sequence[str] = ()
    postinst: str = ""


def kubernetes_packages(bins: Path, cni_dir: Path, kube_version: str, cri_version: str, cni_version: str, revision: str) -> list[DebSpec]:
    """pkgs.k8s.io's five packages from built binaries (`bins` holds the kube commands and crictl)."""
    kube = f"{kube_version}-{revision}"
    cni_files: dict[str, Path | str] = {f"opt/cni/bin/{p.name}": p for p in sorted(cni_dir.iterdir())}
    return [
        DebSpec(
            "kubelet",
            kube,
            "Node agent for Kubernetes clusters",
            depends=("iptables (>= 1.4.21)", "kubernetes-cni (>= 1.1.1)", "iproute2", "socat", "util-linux", "mount", "ebtables", "ethtool", "conntrack"),
            files={
                "usr/bin/kubelet": bins / "kubelet",
                "usr/lib/systemd/system/kubelet.service": KUBELET_SERVICE,
                "etc/default/kubelet": "KUBELET_EXTRA_ARGS=\n",
            },
            conffiles=("/etc/default/kubelet",),
            postinst=_RELOAD_POSTINST,
        ),
        DebSpec(
            "kubeadm",
            kube,
            "Command-line utility for administering a Kubernetes cluster",
            depends=("kubelet (>= 1.19.0)", "kubectl (>= 1.19.0)", "kubernetes-cni (>= 1.1.1)", "cri-tools (>= 1.28.0)"),
            files={
                "usr/bin/kubeadm": bins / "kubeadm",
                "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": KUBEADM_DROP_IN,
            },
            postinst=_RELOAD_POSTINST,
        ),
        DebSpec("kubectl", kube, "Command-line utility for interacting with a Kubernetes cluster", files={"usr/bin/kubectl": bins / "kubectl"}),
        DebSpec("cri-tools", f"{cri_version}-{revision}", "Command-line utility for interacting with a container runtime", files={"usr/bin/crictl": bins / "crictl"}),
        DebSpec("kubernetes-cni", f"{cni_version}-{revision}", "Binaries required to provision kubernetes container networking", files=cni_files),
    ]


def render_control(spec: DebSpec, installed_kib: int) -> str:
    fields = {
        "Package": spec.name,
        "Version": spec.version,
        "Architecture": ARCH,
        "Maintainer": "kubeadm-libvirt lab <lab@kubeadm-libvirt.invalid>",
        "Installed-Size": str(installed_kib),
        **({"Depends": ", ".join(spec.depends)} if spec.depends else {}),
        "Section": "admin",
        "Priority": "optional",
        "Homepage": "https://kubernetes.io",
        "Description": f"{spec.description}\n Built by the kubeadm-libvirt lab mirror from the Go modules pinned in lab/pins.yaml.",
    }
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def build_deb(spec: DebSpec, work: Path, out_dir: Path) -> Path:
    """dpkg-deb --root-owner-group --build of a staging tree with the package's files."""
    root = work / f"{spec.name}_{spec.version}"
    for inside, source in spec.files.items():
        target = root / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, target)
            target.chmod(0o755)
        else:
            target.write_text(source)
            target.chmod(0o644)
    debian = root / "DEBIAN"
    debian.mkdir(parents=True)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    (debian / "control").write_text(render_control(spec, -(-size // 1024)))
    if spec.conffiles:
        (debian / "conffiles").write_text("".join(f"{c}\n" for c in spec.conffiles))
    if spec.postinst:
        (debian / "postinst").write_text(spec.postinst)
        (debian / "postinst").chmod(0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{spec.name}_{spec.version}_{ARCH}.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)])
    shutil.rmtree(root)
    return deb


# --- signing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A GnuPG home holding the lab mirror's one signing key (no passphrase: it signs lab repositories only)."""

    home: Path

    @classmethod
    def create(cls, home: Path) -> SigningKey:
        home.mkdir(mode=0o700, parents=True)
        key = cls(home)
        key.gpg("--quick-generate-key", "kubeadm-libvirt lab mirror <lab@kubeadm-libvirt.invalid>", "ed25519", "sign", "never")
        return key

    def gpg(self, *args: str) -> str:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args], env=env)

    def close(self) -> None:
        """End the gpg-agent gpg started for this home (gpgconf finds it by the home's socket)."""
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(self.home)}, check=False)

    def export(self, target: Path) -> None:
        target.write_text(self.gpg("--armor", "--export"))

    def sign_release(self, release_dir: Path) -> None:
        """InRelease (clear-signed) and Release.gpg (detached) next to Release, as apt looks for either."""
        release = release_dir / "Release"
        for stale in ("InRelease", "Release.gpg"):
            (release_dir / stale).unlink(missing_ok=True)
        self.gpg("--clearsign", "--output", str(release_dir / "InRelease"), str(release))
        self.gpg("--armor", "--detach-sign", "--output", str(release_dir / "Release.gpg"), str(release))


# --- repositories -------------------------------------------------------------------------------------------------


def write_flat_repository(repo: Path, debs: Sequence[Path], key: SigningKey) -> None:
    """A flat repository (`deb URL /`): the .debs, Packages(.gz), a signed Release and Release.key, in one directory."""
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copyfile(deb, repo / deb.name)
    packages = run(["apt-ftparchive", "packages", "."], cwd=repo)
    _write_packages(repo, packages)
    (repo / "Release").write_text(run(["apt-ftparchive", "release", "."], cwd=repo))
    key.sign_release(repo)
    key.export(repo / "Release.key")


def write_debian_archive(archive: Path, debs: Sequence[Path], key: SigningKey) -> None:
    """dists/<suite>/main/binary-<arch>/Packages and pool/main: the layout of deb.debian.org, one suite."""
    pool = archive / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copyfile(deb, pool / deb.name)
    dist = archive / "dists" / SUITE
    binary = dist / "main" / f"binary-{ARCH}"
    binary.mkdir(parents=True, exist_ok=True)
    _write_packages(binary, run(["apt-ftparchive", "packages", "pool/main"], cwd=archive))
    options = [
        f"-oAPT::FTPArchive::Release::{name}={value}"
        for name, value in (("Origin", "kubeadm-libvirt lab"), ("Suite", SUITE), ("Codename", SUITE), ("Components", "main"), ("Architectures", ARCH))
    ]
    (dist / "Release").write_text(run(["apt-ftparchive", *options, "release", "."], cwd=dist))
    key.sign_release(dist)
    key.export(archive / "archive.key")


def _write_packages(directory: Path, text: str) -> None:
    (directory / "Packages").write_text(text)
    (directory / "Packages.gz").write_bytes(gzip.compress(text.encode(), mtime=0))


# --- the Debian packages the nodes need, with their dependency closure --------------------------------------------


def private_apt(work: Path, sources: str) -> list[str]:
    """apt-get options for an apt state of its own under `work` (empty status: nothing installed; `sources` as its
    sources.list; no locking): the host's apt state, lists and cache are never touched."""
    state, cache, etc = work / "state", work / "cache", work / "etc"
    for directory in (state / "lists" / "partial", cache / "archives" / "partial", etc / "preferences.d", etc / "apt.conf.d"):
        directory.mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    (etc / "sources.list").write_text(sources)
    return [
        f"-oDir::State={state}",
        f"-oDir::State::status={state / 'status'}",
        f"-oDir::Cache={cache}",
        f"-oDir::Etc={etc}",
        f"-oDir::Etc::SourceParts={etc / 'sources.list.d'}",
        f"-oAPT::Architecture={ARCH}",
        f"-oAPT::Architectures::={ARCH}",
        "-oDebug::NoLocking=1",
        "-oAPT::Install-Recommends=false",
    ]


def download_closure(packages: Sequence[str], mirror: str, work: Path) -> list[Path]:
    """Every .deb `apt-get install` of `packages` would fetch on a system with nothing installed: the whole closure,
    so the archive serves a node whatever its image already has."""
    sources = "".join(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {url} {suite} main\n"
        for url, suite in ((mirror, SUITE), (mirror, f"{SUITE}-updates"))
    )
    options = private_apt(work, sources)
    run(["apt-get", *options, "update"])
    run(["apt-get", *options, "install", "--download-only", "--yes", *packages])
    return sorted((work / "cache" / "archives").glob("*.deb"))
