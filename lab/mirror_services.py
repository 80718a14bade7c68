"""Serve a built lab mirror inside a lab host's network namespace: where the lab's VMs install from.

- HTTP on port 8080: the mirror's www/ (the pkgs.k8s.io-style repository and the Debian archive), read-only.
- Debian's docker-registry (distribution 2.8) on port 5000, plain HTTP, holding the mirror's images under k8s/,
  pushed with skopeo from the OCI layouts.

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
from dataclasses import dataclass
from pathlib import Path

from components import yaml_io
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


def render_registry_config(storage: Path) -> str:
    return yaml_io.dump(
        {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": False}},
            "http": {"addr": f"0.0.0.0:{REGISTRY_PORT}"},
        }
    )


def start(lab_host: LabHost, mirror: Mirror) -> None:
    """Serve `mirror` in `lab_host`'s namespace. The calling process must already have joined it (lab/netns.py):
    readiness and pushes go to the namespace's 127.0.0.1."""
    for tool, package in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            raise LabError(f"serving the lab mirror needs {tool}: apt-get install {package}")
    state = lab_host.state_dir / "mirror"
    state.mkdir(parents=True, exist_ok=True)
    storage = lab_host.data_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    (state / "registry.yml").write_text(render_registry_config(storage))
    http = [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0", "--directory", str(mirror.www)]
    _ensure_running(state, "http", http)
    _ensure_running(state, "registry", ["docker-registry", "serve", str(state / "registry.yml")])
    _wait_ready(f"http://127.0.0.1:{HTTP_PORT}/debian/archive.key", "the mirror's HTTP server", state / "http.log")
    _wait_ready(f"http://127.0.0.1:{REGISTRY_PORT}/v2/", "the registry", state / "registry.log")
    for ref in mirror.image_refs():
        name, tag = ref.split(":")
        destination = f"docker://127.0.0.1:{REGISTRY_PORT}/{IMAGE_PATH}/{name}:{tag}"
        done = subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{mirror.images / name}:{tag}", destination],
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
