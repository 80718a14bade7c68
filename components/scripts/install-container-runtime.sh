#!/usr/bin/env bash
# install-container-runtime.sh: docker-ce, docker-ce-cli, containerd.io pinned from Docker's repo (docker-repo), or the distribution's docker.io, containerd, runc (os-archive); held.
# Safe to re-run: does nothing (apart from apt-mark hold) when the requested packages are already installed.
# Inputs (env): CONTAINER_RUNTIME_SOURCE (docker-repo|os-archive); docker-repo: DOCKER_APT_REPO (the directory holding ubuntu/, debian/),
#   DOCKER_VERSION (24.0.2), CONTAINERD_VERSION (1.6.21); os-archive: CONTAINERD_MIN_VERSION (1.6); APT_LOCK_TIMEOUT_SECONDS, TIMEOUT_SCALE_PERCENT.
set -euo pipefail

KEYRING=/etc/apt/keyrings/docker.gpg
SOURCES=/etc/apt/sources.list.d/docker.list

# Docker publishes one repository per distribution, <base>/<os-release ID>; its package versions name the
# distribution too (5:24.0.2-1~ubuntu.18.04~bionic, 5:24.0.2-1~debian.12~bookworm): resolve_version matches the
# upstream part only, so DOCKER_VERSION stays distribution-neutral.

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
source=${CONTAINER_RUNTIME_SOURCE:-docker-repo}
case $source in
  docker-repo)
    base=${DOCKER_APT_REPO-}
    base=${base%/}
    if ! is_http_url "$base" || [[ $base == *[\"\'\\]* ]]; then
      problem "DOCKER_APT_REPO='$base': expected an http(s) base URL such as https://download.docker.com/linux"
    elif [[ $base == */ubuntu || $base == */debian ]]; then
      problem "DOCKER_APT_REPO='$base': expected the directory above the per-distribution repositories, e.g. ${base%/*} (this node adds its own)"
    fi
    docker_version=${DOCKER_VERSION-}
    [[ $docker_version =~ ^[0-9]+(\.[0-9]+){1,3}$ ]] ||
      problem "DOCKER_VERSION='$docker_version': expected an upstream version such as 24.0.2"
    containerd_version=${CONTAINERD_VERSION-}
    [[ $containerd_version =~ ^[0-9]+(\.[0-9]+){1,3}$ ]] ||
      problem "CONTAINERD_VERSION='$containerd_version': expected an upstream version such as 1.6.21"
    ;;
  os-archive)
    min_containerd=${CONTAINERD_MIN_VERSION-}
    [[ $min_containerd =~ ^[0-9]+(\.[0-9]+){1,2}$ ]] ||
      problem "CONTAINERD_MIN_VERSION='$min_containerd': expected the oldest containerd the Kubernetes minor runs with, e.g. 1.6 or 2.0"
    ;;
  *) problem "CONTAINER_RUNTIME_SOURCE='$source': expected 'docker-repo' or 'os-archive'" ;;
esac
apt_lock_timeout_input
exit_on_problems

# --- os-archive: the distribution's own packages, from this node's apt sources (e.g. osAptSources) ----
if [[ $source == os-archive ]]; then
  PACKAGES=(docker.io containerd runc)
  at_least() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1) == "$2" ]]; } # at_least VERSION MINIMUM
  numeric() { local v; v=$(upstream_of "$1"); printf '%s' "${v%%[!0-9.]*}"; } # 1.6.20~ds1-1+deb12u3 -> 1.6.20
  missing=()
  for p in "${PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
  if ((${#missing[@]} > 0)); then
    apt_update
    candidate=$(apt-cache policy containerd 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
    [[ -n $candidate && $candidate != "(none)" ]] ||
      die "this node's apt sources have no containerd package (CONTAINER_RUNTIME_SOURCE=os-archive installs the distribution's; check osAptSources)"
    at_least "$(numeric "$candidate")" "$min_containerd" ||
      die "the distribution's containerd $candidate is older than $min_containerd, which this Kubernetes version needs (CONTAINERD_MIN_VERSION); use containerRuntimeSource docker-repo with a newer containerdVersion"
    # docker-ce and containerd.io (docker-repo) conflict with these: apt replaces them.
    apt_install "${missing[@]}"
  fi
  installed=$(installed_version containerd)
  at_least "$(numeric "$installed")" "$min_containerd" ||
    die "containerd $installed is installed, older than $min_containerd (CONTAINERD_MIN_VERSION)"
  ensure_held "${PACKAGES[@]}"
  printf 'docker.io %s, containerd %s, runc %s from the OS archive\n' \
    "$(installed_version docker.io)" "$installed" "$(installed_version runc)"
  exit 0
fi

distro=$(os_release ID)
codename=$(os_release VERSION_CODENAME)
case $distro in
  ubuntu | debian) ;;
  *) die "this node runs '${distro:-an unknown distribution}' (ID in $OS_RELEASE); supported: ubuntu, debian" ;;
esac
[[ -n $codename ]] || die "cannot tell the $distro release: no VERSION_CODENAME in $OS_RELEASE"
repo=$base/$distro

declare -A want=([docker-ce]=$docker_version [docker-ce-cli]=$docker_version [containerd.io]=$containerd_version)
PACKAGES=(docker-ce docker-ce-cli containerd.io)

resolve_version() { # resolve_version PKG UPSTREAM: newest full version in the apt lists with that upstream part
  local versions v
  versions=$(available_versions "$1" || true)
  while read -r v; do
    if [[ -n $v && $(upstream_of "$v") == "$2" ]]; then
      printf '%s\n' "$v"
      return 0
    fi
  done <<<"$versions"
}

# --- already installed? ----------------------------------------------------------------------
satisfied=1
for p in "${PACKAGES[@]}"; do
  v=$(installed_version "$p")
  if [[ -z $v ]]; then
    log "$p is not installed"
    satisfied=0
  elif [[ $(upstream_of "$v") != "${want[$p]}" ]]; then
    log "$p $v is installed, ${want[$p]} is requested"
    satisfied=0
  fi
done

if ((satisfied)); then
  log "docker-ce $docker_version and containerd.io $containerd_version are already installed"
else
  make_work_dir
  arch=$(dpkg --print-architecture)
  log "Docker repository: $repo $codename stable"

  install_apt_key "$repo/gpg" "$KEYRING"
  printf 'deb [arch=%s signed-by=%s] %s %s stable\n' "$arch" "$KEYRING" "$repo" "$codename" >"$WORK/docker.list"
  put_apt_file "$WORK/docker.list" "$SOURCES"
  apt_update

  pins=()
  for p in "${PACKAGES[@]}"; do
    full=$(resolve_version "$p" "${want[$p]}")
    if [[ -z $full ]]; then
      available=$(available_versions "$p" | paste -sd' ' - || true)
      die "$p ${want[$p]} is not available from $repo ($codename); available: ${available:-none}"
    fi
    pins+=("$p=$full")
  done
  apt_install "${pins[@]}"
fi

ensure_held "${PACKAGES[@]}"

printf 'docker-ce %s, containerd.io %s\n' "$(installed_version docker-ce)" "$(installed_version containerd.io)"
