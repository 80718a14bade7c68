"""Find the Debian mirror this host's apt already uses, so image builds go where apt goes."""

from __future__ import annotations

from pathlib import Path


class NoAptSource(LookupError):
    """No enabled apt source serves the requested suite."""


def debian_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The first enabled ``deb`` source for ``suite``, from deb822 .sources or one-line .list files."""
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(path.read_text()):
                enabled = stanza.get("enabled", "yes").lower() != "no"
                if enabled and "deb" in stanza.get("types", "").split() and suite in stanza.get("suites", "").split():
                    return stanza["uris"].split()[0]
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in path.read_text().splitlines():
                uri_and_suite = _one_line_source(line)
                if uri_and_suite and uri_and_suite[1] == suite:
                    return uri_and_suite[0]
    raise NoAptSource(f"no enabled apt source for suite {suite!r} under {apt_dir}")


def _one_line_source(line: str) -> tuple[str, str] | None:
    """(uri, suite) of a ``deb [options] uri suite components`` line, else None."""
    words = line.split("#", 1)[0].split()
    if words[:1] != ["deb"]:
        return None
    words = words[1:]
    if words and words[0].startswith("["):
        while words and not words[0].endswith("]"):
            words.pop(0)
        words = words[1:]
    return (words[0], words[1]) if len(words) >= 2 else None


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = [{}]
    last_key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            stanzas.append({})
        elif line[0] in " \t" and last_key:
            stanzas[-1][last_key] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            last_key = name.strip().lower()
            stanzas[-1][last_key] = value.strip()
    return [stanza for stanza in stanzas if stanza]
