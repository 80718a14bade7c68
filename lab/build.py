"""What the lab's builds share: a cache of directories named after a content key, Go builds from wrapper modules,
and timed, logged steps whose failures name the command and the tail of its output.

A keyed directory is built in a scratch directory beside it and renamed into place when complete, so a directory
named after a key is always whole; builders of one key serialize on a lock file, and scratch left by a killed build
is removed by the next builder of that key.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lab.errors import LabError

Log = Callable[[str], None]
COMPLETE = "manifest.json"  # every keyed build writes it last


def digest_files(base: Path, paths: Iterable[Path], *extra: str) -> str:
    """A short content key: each file's path relative to `base` and its bytes, then `extra` strings (tool versions)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def ensure_keyed(cache: Path, key: str, build: Callable[[Path], None], *, force: bool = False, log: Log) -> Path:
    """`cache/key`, built by `build(scratch)` first when missing (or when `force`). `build` must write COMPLETE."""
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / key
    started = time.monotonic()
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builders of one key wait for the first
        if force and final.exists():
            shutil.rmtree(final)
        if (final / COMPLETE).is_file():
            log(f"reusing {final} ({time.monotonic() - started:.1f} s)")
            return final
        for stale in cache.glob(f".build-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = cache / f".build-{key}-{os.getpid()}"
        try:
            build(scratch)
            if not (scratch / COMPLETE).is_file():
                raise LabError(f"the build of {final} finished without writing {COMPLETE}")
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final


@contextmanager
def timed(seconds: dict[str, float], name: str, log: Log) -> Iterator[None]:
    """Log a build part's start and duration, and record the duration in `seconds` (the manifest's figures)."""
    log(f"building {name} ...")
    started = time.monotonic()
    yield
    seconds[name] = round(time.monotonic() - started, 1)
    log(f"{name}: {seconds[name]:.0f} s")


def go_build(
    module_dir: Path,
    packages: list[str] | str,
    output: Path,
    *,
    ldflags: str,
    tags: str = "",
    cgo: bool = False,
    env: Mapping[str, str] | None = None,
) -> None:
    """`go build` in a wrapper module whose go.mod and go.sum pin the graph (-mod=readonly: nothing is re-resolved).
    Static (unless `cgo`) and reproducible; `output` is a file for one package, a directory for several. `env` adds
    to or overrides the build's variables: a module set with go settings of its own (lab/calico.py's GOFLAGS and
    GOPROXY), cgo's compiler and linker flags."""
    packages = [packages] if isinstance(packages, str) else packages
    build_env = {**os.environ, "CGO_ENABLED": "1" if cgo else "0", "GOFLAGS": "-mod=readonly", **(env or {})}
    argv = ["go", "build", "-trimpath", "-ldflags", f"-s -w {ldflags}".strip(), "-o", f"{output}{os.sep if len(packages) > 1 else ''}"]
    if tags:
        argv += ["-tags", tags]
    run([*argv, *packages], cwd=module_dir, env=build_env)


def go_version() -> str:
    if shutil.which("go") is None:
        raise LabError("go is missing: install Go 1.26 (the lab builds its tools from Go modules)")
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def run(argv: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise LabError(f"`{' '.join(argv[:4])} ...` failed (exit {result.returncode}): " + " | ".join(tail))
    return result.stdout


def tree_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())
