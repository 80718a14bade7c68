#!/usr/bin/env bash
# install-container-runtime.sh: docker-ce, docker-ce-cli, containerd.io pinned from Docker's repo for this node's distribution (Ubuntu or Debian), held.
# Safe to re-run: does nothing (apart from apt-mark hold) when the requested versions are already installed.
# Inputs (env): DOCKER_APT_REPO (the directory holding ubuntu/ and debian/), DOCKER_VERSION (e.g. 24.0.2),
#               CONTAINERD_VERSION (e.g. 1.6.21), APT_LOCK_TIMEOUT_SECONDS, TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

KEYRING=/etc/apt/keyrings/docker.gpg
SOURCES=/etc/apt/sources.list.d/docker.list

# Docker publishes one repository per distribution, <base>/<os-release ID>; its package versions name the
# distribution too (5:24.0.2-1~ubuntu.18.04~bionic, 5:24.0.2-1~debian.12~bookworm): resolve_version matches the
# upstream part only, so DOCKER_VERSION stays distribution-neutral.

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
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
apt_lock_timeout_input
exit_on_problems

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
