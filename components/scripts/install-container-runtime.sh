#!/usr/bin/env bash
# install-container-runtime.sh: install docker-ce, docker-ce-cli and containerd.io pinned from Docker's apt repo, then hold them.
# Safe to re-run: does nothing (apart from apt-mark hold) when the requested versions are already installed.
# Inputs (env): DOCKER_APT_REPO (base URL), DOCKER_VERSION (e.g. 24.0.2), CONTAINERD_VERSION (e.g. 1.6.21),
#               APT_LOCK_TIMEOUT_SECONDS (optional, default 300).
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive HOME=/root # sudo on bionic keeps the caller's HOME

TAG='[install-container-runtime]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

KEYRING=/etc/apt/keyrings/docker.gpg
SOURCES=/etc/apt/sources.list.d/docker.list

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
repo=${DOCKER_APT_REPO-}
if [[ ! $repo =~ ^https?://[^[:space:]]+$ || $repo == *[\"\'\\]* ]]; then
  problems+=("DOCKER_APT_REPO='$repo': expected an http(s) base URL such as https://download.docker.com/linux/ubuntu")
fi
repo=${repo%/}
docker_version=${DOCKER_VERSION-}
[[ $docker_version =~ ^[0-9]+(\.[0-9]+){1,3}$ ]] ||
  problems+=("DOCKER_VERSION='$docker_version': expected an upstream version such as 24.0.2")
containerd_version=${CONTAINERD_VERSION-}
[[ $containerd_version =~ ^[0-9]+(\.[0-9]+){1,3}$ ]] ||
  problems+=("CONTAINERD_VERSION='$containerd_version': expected an upstream version such as 1.6.21")
lock_timeout=${APT_LOCK_TIMEOUT_SECONDS:-300}
[[ $lock_timeout =~ ^[0-9]{1,6}$ ]] ||
  problems+=("APT_LOCK_TIMEOUT_SECONDS='$lock_timeout': expected a whole number of seconds")
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi

declare -A want=([docker-ce]=$docker_version [docker-ce-cli]=$docker_version [containerd.io]=$containerd_version)
PACKAGES=(docker-ce docker-ce-cli containerd.io)

# --- helpers ---------------------------------------------------------------------------------
installed_version() { # prints the installed version of a package, or nothing
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]] || return 0
  dpkg-query -W -f='${Version}' "$1"
}
upstream_of() { # 5:24.0.2-1~ubuntu.18.04~bionic -> 24.0.2 (drop the epoch and the Debian revision)
  local v=$1
  [[ $v == *:* ]] && v=${v#*:}
  printf '%s' "${v%-*}"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

CHANGED=0
put_file() { # put_file SRC DEST MODE: write only when the content differs; sets CHANGED=1 if written
  local src=$1 dest=$2 mode=$3
  CHANGED=0
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    [[ $(stat -c %a "$dest") == "$mode" ]] || chmod "$mode" "$dest"
    return 0
  fi
  install -D -m "$mode" -o root -g root "$src" "$dest"
  CHANGED=1
  log "wrote $dest"
}

APT_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)
wait_for_apt_locks() { # bionic's apt has no lock timeout: wait (bounded) until no process holds a lock
  local deadline=$((SECONDS + 10#$lock_timeout)) f busy
  while :; do
    busy=''
    for f in "${APT_LOCKS[@]}"; do
      if [[ -e $f ]] && [[ -n $(find /proc/[0-9]*/fd -maxdepth 1 -type l -lname "$f" -print -quit 2>/dev/null || true) ]]; then
        busy=$f
        break
      fi
    done
    [[ -z $busy ]] && return 0
    ((SECONDS < deadline)) || die "$busy is still held by another process after ${lock_timeout}s (APT_LOCK_TIMEOUT_SECONDS)"
    log "waiting for $busy to be released"
    sleep 3
  done
}

LISTS_FRESH=0 # apt-get update runs at most once per run, and again only if a sources file changed since
apt_update() {
  ((LISTS_FRESH)) && return 0
  wait_for_apt_locks
  log "apt-get update"
  apt-get -qq update >&2
  LISTS_FRESH=1
}
apt_install() {
  apt_update
  wait_for_apt_locks
  log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends --allow-downgrades --allow-change-held-packages \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2
}

resolve_version() { # resolve_version PKG UPSTREAM: newest full version in the apt lists with that upstream part
  apt-cache madison "$1" 2>/dev/null | awk -F'|' -v want="$2" '
    { v = $2; gsub(/[[:space:]]/, "", v); u = v; sub(/^[0-9]+:/, "", u); sub(/-[^-]*$/, "", u)
      if (u == want && !found) { print v; found = 1 } }' # no early exit: it could SIGPIPE apt-cache
}

ensure_held() {
  local held p
  held=$(apt-mark showhold)
  for p in "$@"; do
    if ! grep -qxF "$p" <<<"$held"; then
      log "apt-mark hold $p"
      apt-mark hold "$p" >/dev/null
    fi
  done
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
  # prerequisites for fetching the repository key
  prereqs=()
  command -v curl >/dev/null 2>&1 || prereqs+=(curl)
  command -v gpg >/dev/null 2>&1 || prereqs+=(gnupg)
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] || prereqs+=(ca-certificates)
  if ((${#prereqs[@]} > 0)); then apt_install "${prereqs[@]}"; fi

  arch=$(dpkg --print-architecture)
  codename=$(lsb_release -cs 2>/dev/null || sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
  [[ -n $codename ]] || die "cannot tell the distribution codename (no lsb_release, no VERSION_CODENAME in /etc/os-release)"

  log "fetching $repo/gpg"
  curl -fsSL --connect-timeout 15 --max-time 60 --retry 3 --retry-delay 2 "$repo/gpg" -o "$WORK/docker.asc" ||
    die "could not download the repository key from $repo/gpg"
  install -d -m 700 "$WORK/gnupg"
  gpg --batch --yes --homedir "$WORK/gnupg" --dearmor -o "$WORK/docker.gpg" "$WORK/docker.asc" ||
    die "$repo/gpg is not an OpenPGP public key"
  [[ -d /etc/apt/keyrings ]] || install -d -m 755 /etc/apt/keyrings # absent before Debian 12 / Ubuntu 22.04
  put_file "$WORK/docker.gpg" "$KEYRING" 644
  if ((CHANGED)); then LISTS_FRESH=0; fi

  printf 'deb [arch=%s signed-by=%s] %s %s stable\n' "$arch" "$KEYRING" "$repo" "$codename" >"$WORK/docker.list"
  put_file "$WORK/docker.list" "$SOURCES" 644
  if ((CHANGED)); then LISTS_FRESH=0; fi
  apt_update

  pins=()
  for p in "${PACKAGES[@]}"; do
    full=$(resolve_version "$p" "${want[$p]}" || true)
    if [[ -z $full ]]; then
      available=$(apt-cache madison "$p" 2>/dev/null | awk -F'|' '{gsub(/[[:space:]]/, "", $2); print $2}' | paste -sd' ' - || true)
      die "$p ${want[$p]} is not available from $repo ($codename); available: ${available:-none}"
    fi
    pins+=("$p=$full")
  done
  apt_install "${pins[@]}"
fi

ensure_held "${PACKAGES[@]}"

printf 'docker-ce %s, containerd.io %s\n' "$(installed_version docker-ce)" "$(installed_version containerd.io)"
