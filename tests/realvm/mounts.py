"""Guards against deleting through a mount point left inside a build tree."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    root = Path(path).resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = Path(_unescape(line.split()[4]))
        if mount_point == root or root in mount_point.parents:
            found.append(mount_point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    """Detach whatever an interrupted debootstrap left mounted in its target."""
    for mount_point in mounts_under(path):
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def assert_nothing_mounted_under(path: Path) -> None:
    unmount_all_under(path)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"refusing to touch {path}: still mounted: {', '.join(map(str, left))}")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    return field.encode().decode("unicode_escape")
