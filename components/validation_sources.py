"""Validation of where the nodes install from: the OS archive, the container runtime's source, private registries
and Calico's registry (the keys an air-gapped user sets). Called by validation.py, which owns the problem list.

Each function records every problem it finds (key, value, fix) and returns the typed value, or a harmless
placeholder when there were problems (the caller raises before anything uses it).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from components import versions
from components.config import OS_APT_KEYRING, OsAptSpec, RegistrySpec

if TYPE_CHECKING:
    from components.validation import Problems

# host[:port] as an image reference names a registry (containerd's certs.d directory and Docker's use this form).
REGISTRY_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")
REGISTRY_KEYS = frozenset({"host", "plainHttp", "caCert"})
# Installation.spec.registry: a registry with an optional path, ending in "/" (the operator appends calico/node...).
CALICO_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?(/[a-z0-9._-]+)*/$")
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)
APT_OPTION = re.compile(r"^[a-z][a-z-]*=[^\s\[\]]+$")
LAB_EXAMPLE = f"deb [signed-by={OS_APT_KEYRING}] http://192.168.150.1:8080/debian bookworm main"


def parse_os_apt(sources: Any, key_url: str, problems: Problems) -> OsAptSpec:
    """osAptSources (one-line apt entries replacing the image's distribution sources) and osAptKeyUrl."""
    if key_url and not _http_url(key_url):
        problems.add("osAptKeyUrl", key_url, "is not an http(s) URL", "give the URL of the archive's public key, or leave it empty")
    if sources is None:
        return OsAptSpec(sources=(), key_url=key_url)
    lines: list[str] = []
    for index, entry in enumerate(sources):
        key = f"osAptSources[{index}]"
        if not isinstance(entry, str):
            problems.add(key, entry, "is not a string", f"write one apt source line, e.g. {LAB_EXAMPLE}")
            continue
        problem = _apt_source_problem(entry, key_url)
        if problem:
            what, fix = problem
            problems.add(key, entry, what, fix)
        lines.append(entry.strip())
    if key_url and not any(f"signed-by={OS_APT_KEYRING}" in line for line in lines):
        problems.add(
            "osAptKeyUrl", key_url, "is set but no osAptSources entry uses its key",
            f"write [signed-by={OS_APT_KEYRING}] after 'deb' in the entries of that archive, or leave osAptKeyUrl empty",
        )  # fmt: skip
    return OsAptSpec(sources=tuple(lines), key_url=key_url)


def _apt_source_problem(entry: str, key_url: str) -> tuple[str, str] | None:
    """(what is wrong, fix) for one one-line-style apt entry, or None."""
    example = f"e.g. {LAB_EXAMPLE}"
    if "\n" in entry or "\r" in entry or not entry.strip():
        return "is not one line", f"give each source as its own list item, {example}"
    if re.search(r"[\"'\\`$]", entry):
        return "contains quotes, '\\', '`' or '$'", f"write the entry plainly, {example}"
    words = entry.split()
    if words[0] != "deb":
        return "does not start with 'deb ' (binary packages)", example
    options: list[str] = []
    rest = words[1:]
    if rest and rest[0].startswith("["):
        text = " ".join(rest)
        if "]" not in text:
            return "has a '[' options list without ']'", example
        inside, _, after = text[1:].partition("]")
        options, rest = inside.split(), after.split()
        bad = [option for option in options if not APT_OPTION.match(option)]
        if bad:
            return f"has options apt does not read: {' '.join(bad)}", f"write options as key=value, {example}"
    if not rest or not _http_url(rest[0]):
        return "has no http(s) archive URL after 'deb [options]'", example
    if len(rest) < 2:
        return "names no suite after the URL", f"add the suite and components, {example}"
    suite, components = rest[1], rest[2:]
    if suite.endswith("/") and components:
        return f"has components after the flat suite {suite!r}", "drop the components (a suite ending in '/' is a flat repository)"
    if not suite.endswith("/") and not components:
        return f"names no component after the suite {suite!r}", f"add the components, e.g. main, {example}"
    # Without signed-by= apt checks an entry against its trusted keys; with it, osAptKeyUrl's keyring is the only
    # file this program puts there.
    signed_by = [option.split("=", 1)[1] for option in options if option.startswith("signed-by=")]
    if key_url and signed_by and signed_by != [OS_APT_KEYRING]:
        return (
            f"is signed by {' '.join(signed_by)}, but osAptKeyUrl installs its key as {OS_APT_KEYRING}",
            f"write [signed-by={OS_APT_KEYRING}], or leave osAptKeyUrl empty and keep your keyring on the image",
        )
    return None


def _http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and not re.search(r"[\s\"'\\`$]", value)


def parse_registries(raw: Any, registry_mirrors: list[Any], problems: Problems) -> tuple[RegistrySpec, ...]:
    """registries: [{host, plainHttp: true} | {host, caCert: PEM}], each configured for containerd and Docker."""
    if raw is None:
        return ()
    registries: list[RegistrySpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        key = f"registries[{index}]"
        example = "{host: 192.168.150.1:5000, plainHttp: true} or {host: registry.lab:5000, caCert: '-----BEGIN CERTIFICATE-----...'}"
        if not isinstance(entry, dict):
            problems.add(key, entry, "is not a mapping", f"write {example}")
            continue
        for unknown in sorted(set(entry) - REGISTRY_KEYS):
            problems.add(f"{key}.{unknown}", entry[unknown], "is not a known registry key", f"remove it; known keys: {', '.join(sorted(REGISTRY_KEYS))}")
        host = entry.get("host")
        if not isinstance(host, str) or not REGISTRY_HOST.match(host):
            problems.add(f"{key}.host", host, "is not a registry host[:port]", "write it as image references name it, without a scheme or path, e.g. 192.168.150.1:5000")
            host = None
        elif host in seen:
            problems.add(f"{key}.host", host, "is configured twice", "keep one entry per registry")
        elif host == "docker.io" and registry_mirrors:
            problems.add(f"{key}.host", host, "is also configured by registryMirrors (one hosts.toml per registry)", "configure Docker Hub through registryMirrors only")
        plain_http = entry.get("plainHttp", False)
        if not isinstance(plain_http, bool):
            problems.add(f"{key}.plainHttp", plain_http, "is not a boolean", "write plainHttp: true without quotes, or leave it out")
            plain_http = False
        ca_cert = entry.get("caCert")
        if ca_cert is not None and not _pem_certificates(ca_cert):
            problems.add(f"{key}.caCert", _short(ca_cert), "is not a PEM certificate", "paste the CA certificate, -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----")
            ca_cert = None
        elif plain_http and ca_cert is not None:
            problems.add(key, host, "sets both plainHttp and caCert (plain HTTP has no TLS to verify)", "keep plainHttp: true, or caCert for an HTTPS registry")
        elif not plain_http and ca_cert is None and "caCert" not in entry:
            problems.add(key, host, "configures nothing (an HTTPS registry with a public CA needs no entry)", "set plainHttp: true or caCert, or remove the entry")
        if host is not None:
            seen.add(host)
            registries.append(RegistrySpec(host=host, plain_http=plain_http, ca_cert=ca_cert.strip() + "\n" if ca_cert else None))
    return tuple(registries)


def _pem_certificates(value: Any) -> bool:
    """Whether value is one or more PEM certificates, each a base64 body, with nothing but whitespace around them."""
    if not isinstance(value, str) or PEM_CERTIFICATE.sub("", value).strip():
        return False
    bodies = PEM_CERTIFICATE.findall(value)
    try:
        return bool(bodies) and all(base64.b64decode("".join(body.split()), validate=True) for body in bodies)
    except (binascii.Error, ValueError):
        return False


def _short(value: Any) -> Any:
    return value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value


def parse_calico_registry(value: str, problems: Problems) -> str:
    """calicoRegistry: "" keeps Calico's own (quay.io/); otherwise host[:port][/path], written with a final "/"."""
    if not value:
        return versions.CALICO_REGISTRY
    registry = value if value.endswith("/") else value + "/"
    if not CALICO_REGISTRY.match(registry):
        problems.add(
            "calicoRegistry", value, "is not a registry",
            "write host[:port][/path] without a scheme, e.g. 192.168.150.1:5000 (images become 192.168.150.1:5000/calico/node:...)",
        )  # fmt: skip
        return versions.CALICO_REGISTRY
    return registry


def check_runtime_source(source: str, minor: int, image_url: str, problems: Problems) -> None:
    """os-archive installs the distribution's containerd: refuse it where that one is too old for the minor."""
    release = versions.image_release(image_url)
    if source != "os-archive" or release not in versions.OS_ARCHIVE_RUNTIME or versions.image_uses_cgroup_v1(image_url):
        return  # a cgroup v1 image already refuses the minors that need containerd 2 (kubernetesVersion)
    _, containerd = versions.OS_ARCHIVE_RUNTIME[release]
    needed = versions.minimum_containerd(minor)
    if int(containerd.split(".")[0]) < int(needed.split(".")[0]):
        problems.add(
            "containerRuntimeSource",
            source,
            f"installs {release}'s containerd {containerd}, and Kubernetes 1.{minor} needs containerd {needed} or newer",
            f"use docker-repo with a containerdVersion 2.x, or kubernetesVersion 1.{versions.LAST_MINOR_WITH_CONTAINERD_1}",
        )
