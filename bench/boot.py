"""Benchmark 3: does the stack's cloud-init make a node boot slower?

    sudo python3 bench/boot.py [--rounds 3]

Boots one node (the dev stack's control plane) under QEMU, alternately from the seed the stack renders and from a
minimal seed (the same user, key and network config, nothing else), and measures from QEMU start to SSH-ready and
to `cloud-init status --wait` returning. Prints each round, the medians and the ratio stack/minimal.
Target: ratio <= 1.1 (the stack's cloud-init adds no waiting). Uses the real-VM test harness (tests/realvm):
a Debian 12 guest, since Ubuntu images cannot be fetched here; TCG where KVM cannot run the guest.
Prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.mockrun import StackRun, run_program  # noqa: E402
from components.yaml_io import dump  # noqa: E402
from tests.realvm.image import ensure_guest_image  # noqa: E402
from tests.realvm.keys import RealKeyFactory  # noqa: E402
from tests.realvm.qemu import NodeBoot, boot_nodes  # noqa: E402

NODE = "kubernetes-master"
IP = "192.168.141.130"


def seeds(run: StackRun, public_key: str) -> dict[str, dict[str, str]]:
    stack = run.seed_files(NODE)
    minimal_user_data = {"users": [{"name": "ubuntu", "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": [public_key]}]}
    minimal = {
        "user-data": "#cloud-config\n" + dump(minimal_user_data),
        "meta-data": dump({"instance-id": "minimal", "local-hostname": NODE}),
        # The network config stays: without it the guest is not at the address SSH is forwarded to.
        "network-config": stack["network-config"],
    }
    return {"stack": stack, "minimal": minimal}


def boot_once(image, seed: dict[str, str], mac: str, key: Path, workdir: Path) -> tuple[float, float]:
    with boot_nodes(image, [NodeBoot(NODE, mac, IP, seed)], "192.168.141.0/24", "192.168.141.1", workdir, ssh_key=key) as (node,):
        node.ssh("cloud-init status --wait >/dev/null", timeout=600)
        cloud_init_done = time.monotonic() - node.started_at
        return node.ssh_ready_seconds or 0.0, cloud_init_done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    image = ensure_guest_image(ROOT / ".cache" / "realvm")
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        host_keys = Path(tmp) / "host-keys"
        host_keys.mkdir()
        public_key = key.with_suffix(".pub").read_text().strip()
        run = run_program("dev", overrides={"sshPublicKey": public_key, "sshPrivateKey": key.read_text()},
                          secret_keys=["sshPrivateKey"], key_factory=RealKeyFactory(host_keys))  # fmt: skip
        variants = seeds(run, public_key)
        mac = run.named(f"{NODE}-domain").input("networkInterfaces")[0]["mac"]
        results: dict[str, list[tuple[float, float]]] = {"stack": [], "minimal": []}
        for round_number in range(1, args.rounds + 1):
            for variant in ("stack", "minimal"):  # alternated, so drift in machine load hits both alike
                ssh_s, done_s = boot_once(image, variants[variant], mac, key, Path(tmp) / f"{variant}-{round_number}")
                results[variant].append((ssh_s, done_s))
                print(f"round {round_number} {variant:>7}: SSH ready {ssh_s:6.1f} s, cloud-init done {done_s:6.1f} s", flush=True)
    medians = {v: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for v, rs in results.items()}
    for variant, (ssh_s, done_s) in medians.items():
        print(f"median {variant:>7}: SSH ready {ssh_s:6.1f} s, cloud-init done {done_s:6.1f} s")
    print(f"ratio stack/minimal: SSH ready {medians['stack'][0] / medians['minimal'][0]:.2f}, "
          f"cloud-init done {medians['stack'][1] / medians['minimal'][1]:.2f} (target <= 1.1)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
