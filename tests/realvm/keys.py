"""Real ed25519 key pairs for the mocked tls provider, so a booted guest can use the host keys it is given."""

from __future__ import annotations

import subprocess
from pathlib import Path


class RealKeyFactory:
    """A `components.mockrun.KeyFactory` backed by ssh-keygen; remembers each public key by resource name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.public: dict[str, str] = {}

    def __call__(self, name: str) -> tuple[str, str]:
        path = self.directory / name
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
        self.public[name] = path.with_suffix(".pub").read_text().strip()
        return path.read_text(), self.public[name] + "\n"
