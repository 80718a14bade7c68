"""Serve a built lab mirror inside a lab host's network namespace: where the lab's VMs install from.

- HTTP on port 8080: the mirror's www/ (the pkgs.k8s.io-style repository and the Debian archive) and the Calico
  build's (calico/manifests/), read-only, from a directory of links to both in the host's state.
- Debian's docker-registry (distribution 2.8) on port 5000, plain HTTP, holding the mirror's images under k8s/ and
  the Calico build's at the root (calico/<name>, tigera/operator, lab/nginx), pushed with skopeo from the OCI layouts.

Both listen on every address *of the namespace*: its loopback and the lab network's bridge, which the VMs reach as
their gateway. Nothing is served in the root namespace. The processes are the lab host's: `lab host stop` ends
everything that runs in its namespace, by pid. Starting again while they run only pushes the images again (skopeo
skips blobs the registry has).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components import yaml_io
from lab.calico import WWW_PATH as CALICO_WWW_PATH
from lab.calico import CalicoBuild, require_calico, smoke_image_ref
from lab.errors import LabError
from lab.host import LabHost, process_alive
from lab.mirror import IMAGE_PATH, KUBERNETES_REPO_PATH, Mirror

HTTP_PORT = 8080
REGISTRY_PORT = 5000
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class MirrorEndpoints:
    """The mirror as the VMs see it, at `address` (the lab network's gateway): what a stack's config points at."""

    address: str

    @property
    def registry(self) -> str:
        return f"{self.address}:{REGISTRY_PORT}"

    @property
    def image_repository(self) -> str:
        return f"{self.registry}/{IMAGE_PATH}"

    @property
    def kubernetes_apt_mirror(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}/{KUBERNETES_REPO_PATH}"

    @property
    def debian_archive(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}/debian"

    @property
    def calico_registry(self) -> str:
        """Installation.registry: the operator appends calico/<name>:<tag> and tigera/operator:<tag> to it."""
        return f"{self.registry}/"

    @property
    def calico_manifest_url(self) -> str:
        """The directory of the operator's manifests (operator-crds.yaml, tigera-operator.yaml)."""
        return f"http://{self.address}:{HTTP_PORT}/{CALICO_WWW_PATH}/manifests"

    @property
    def smoke_image(self) -> str:
        return f"{self.registry}/{smoke_image_ref()}"


def render_registry_config(storage: Path) -> str:
    return yaml_io.dump(
        {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": False}},
            "http": {"addr": f"0.0.0.0:{REGISTRY_PORT}"},
        }
    )


def start(lab_host: LabHost, mirror: Mirror, calico: CalicoBuild | None = None) -> None:
    """Serve `mirror` and `calico` (by default the Calico build of this clone, which must exist: building needs the
    network the namespace lacks) in `lab_host`'s namespace. The calling process must already have joined it
    (lab/netns.py): readiness and pushes go to the namespace's 127.0.0.1."""
    calico = calico if calico is not None else require_calico()
    for tool, package in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            raise LabError(f"serving the lab mirror needs {tool}: apt-get install {package}")
    state = lab_host.state_dir / "mirror"
    state.mkdir(parents=True, exist_ok=True)
    storage = lab_host.data_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    (state / "registry.yml").write_text(render_registry_config(storage))
    link_children(state / "www", [mirror.www, calico.www])
    http = [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0", "--directory", str(state / "www")]
    _ensure_running(state, "http", http)
    _ensure_running(state, "registry", ["docker-registry", "serve", str(state / "registry.yml")])
    _wait_ready(f"http://127.0.0.1:{HTTP_PORT}/debian/archive.key", "the mirror's HTTP server", state / "http.log")
    _wait_ready(f"http://127.0.0.1:{HTTP_PORT}/{CALICO_WWW_PATH}/manifests/tigera-operator.yaml", "the mirror's HTTP server", state / "http.log")
    _wait_ready(f"http://127.0.0.1:{REGISTRY_PORT}/v2/", "the registry", state / "registry.log")
    for ref in mirror.image_refs():
        _push(mirror.images / ref.split(":")[0], f"{IMAGE_PATH}/{ref}")
    for name, ref in sorted(calico.image_refs().items()):
        _push(calico.images / name, ref)


def link_children(root: Path, sources: Sequence[Path]) -> None:
    """`root` holds a symlink to each entry of the `sources` directories (the builds' www/ trees): one HTTP root
    for them all, which follows a rebuilt build to its new cache entry without a restart of the server. Each link
    is replaced atomically; links to what the sources no longer hold are removed."""
    wanted = {child.name: child for source in sources for child in sorted(source.iterdir())}
    count = sum(1 for source in sources for _ in source.iterdir())
    if len(wanted) != count:
        raise LabError(f"{', '.join(map(str, sources))} share top-level names: one HTTP root cannot serve them")
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for name, child in wanted.items():
        staged = root / f".{name}.new"
        staged.unlink(missing_ok=True)
        staged.symlink_to(child)
        staged.replace(root / name)


def _push(layout: Path, ref: str) -> None:
    """Copy the OCI layout's image tagged as `ref` (path:tag) to the lab registry at `ref`."""
    tag = ref.rsplit(":", 1)[1]
    destination = f"docker://127.0.0.1:{REGISTRY_PORT}/{ref}"
    done = subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}", destination],
        capture_output=True,
        text=True,
        env=_NO_PROXY_ENV,
    )
    if done.returncode != 0:
        raise LabError(f"pushing {ref} to the lab registry failed: {done.stderr.strip()}")


def _ensure_running(state: Path, name: str, argv: list[str]) -> None:
    pid_file = state / f"{name}.pid"
    if pid_file.exists() and process_alive(int(pid_file.read_text())):
        return
    with open(state / f"{name}.log", "ab") as log:
        # A session of its own: an interrupted caller does not take the service down with it.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    pid_file.write_text(str(process.pid))


# Never through a proxy from the environment: the mirror is inside the namespace, and nothing else is a target.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NO_PROXY_ENV = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}


def _wait_ready(url: str, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with _DIRECT.open(url, timeout=5):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
                raise LabError(f"{what} did not answer on {url} within {READY_TIMEOUT:.0f} s ({error}): {' | '.join(tail)}") from None
            time.sleep(0.5)
