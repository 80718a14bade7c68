# step install-kube-packages
#   KUBERNETES_APT_REPO="https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
#   KUBERNETES_VERSION="1.34"
#   NODE_IP="192.168.141.130"
#!/usr/bin/env bash
# install-kube-packages.sh: kubelet, kubeadm, kubectl from a pkgs.k8s.io-style repo, pinned and held; kubelet --node-ip.
# Safe to re-run: installs only when the packages are missing or at another version; files change only when different.
# Inputs (env): KUBERNETES_APT_REPO (repo URL of one minor), KUBERNETES_VERSION (1.34 or 1.34.3), NODE_IP (IPv4),
#               APT_LOCK_TIMEOUT_SECONDS (optional, default 300).
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive HOME=/root # sudo on bionic keeps the caller's HOME

TAG='[install-kube-packages]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
SOURCES=/etc/apt/sources.list.d/kubernetes.list
PACKAGES=(kubelet kubeadm kubectl)

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o
  for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
}

repo=${KUBERNETES_APT_REPO-}
if [[ ! $repo =~ ^https?://[^[:space:]]+$ || $repo == *[\"\'\\]* ]]; then
  problems+=("KUBERNETES_APT_REPO='$repo': expected the repo URL of one minor, e.g. https://pkgs.k8s.io/core:/stable:/v1.34/deb/")
fi
repo=${repo%/}/ # Release.key and the "/" suite are relative to the URL with its trailing slash

version=${KUBERNETES_VERSION-}
version=${version#v}
if [[ $version =~ ^(1\.[0-9]{1,3})(\.[0-9]{1,3})?$ ]]; then
  minor=${BASH_REMATCH[1]}
  exact=${BASH_REMATCH[2]:+$version} # empty when only a minor was requested
  if [[ $repo =~ /v(1\.[0-9]+)/ && ${BASH_REMATCH[1]} != "$minor" ]]; then
    problems+=("KUBERNETES_VERSION='${KUBERNETES_VERSION-}' does not match the minor of KUBERNETES_APT_REPO ($repo)")
  fi
else
  problems+=("KUBERNETES_VERSION='${KUBERNETES_VERSION-}': expected a minor such as 1.34 or a patch such as 1.34.3")
fi

node_ip=${NODE_IP-}
is_ipv4 "$node_ip" || problems+=("NODE_IP='$node_ip': expected this node's IPv4 address, e.g. 192.168.141.130")

lock_timeout=${APT_LOCK_TIMEOUT_SECONDS:-300}
[[ $lock_timeout =~ ^[0-9]{1,6}$ ]] ||
  problems+=("APT_LOCK_TIMEOUT_SECONDS='$lock_timeout': expected a whole number of seconds")

if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi

# --- helpers ---------------------------------------------------------------------------------
installed_version() { # prints the installed version of a package, or nothing
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]] || return 0
  dpkg-query -W -f='${Version}' "$1"
}
upstream_of() { # 1.34.3-1.1 -> 1.34.3 (drop the epoch and the Debian revision)
  local v=$1
  [[ $v == *:* ]] && v=${v#*:}
  printf '%s' "${v%-*}"
}
wanted_upstream() { # does this upstream version satisfy KUBERNETES_VERSION?
  if [[ -n $exact ]]; then [[ $1 == "$exact" ]]; else [[ $1 == "$minor".* ]]; fi
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

# --- what is installed -----------------------------------------------------------------------
satisfied=1
installed=()
for p in "${PACKAGES[@]}"; do
  v=$(installed_version "$p")
  installed+=("$v")
  if [[ -z $v ]] || ! wanted_upstream "$(upstream_of "$v")"; then satisfied=0; fi
done
# all three at one version (kubelet must not be newer than the control plane kubeadm sets up)
[[ ${installed[0]} == "${installed[1]}" && ${installed[1]} == "${installed[2]}" ]] || satisfied=0

printf 'deb [signed-by=%s] %s /\n' "$KEYRING" "$repo" >"$WORK/kubernetes.list"
if ((satisfied)) && [[ -s $KEYRING ]] && cmp -s "$WORK/kubernetes.list" "$SOURCES"; then
  log "kubelet, kubeadm and kubectl ${installed[0]} are already installed from $repo"
else
  prereqs=()
  command -v curl >/dev/null 2>&1 || prereqs+=(curl)
  command -v gpg >/dev/null 2>&1 || prereqs+=(gnupg)
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] || prereqs+=(ca-certificates)
  if ((${#prereqs[@]} > 0)); then apt_install "${prereqs[@]}"; fi

  log "fetching ${repo}Release.key"
  curl -fsSL --connect-timeout 15 --max-time 60 --retry 3 --retry-delay 2 "${repo}Release.key" -o "$WORK/release.asc" ||
    die "could not download the repository key from ${repo}Release.key"
  install -d -m 700 "$WORK/gnupg"
  gpg --batch --yes --homedir "$WORK/gnupg" --dearmor -o "$WORK/keyring.gpg" "$WORK/release.asc" ||
    die "${repo}Release.key is not an OpenPGP public key"
  [[ -d /etc/apt/keyrings ]] || install -d -m 755 /etc/apt/keyrings # absent before Debian 12 / Ubuntu 22.04
  put_file "$WORK/keyring.gpg" "$KEYRING" 644
  if ((CHANGED)); then LISTS_FRESH=0; fi
  put_file "$WORK/kubernetes.list" "$SOURCES" 644
  if ((CHANGED)); then LISTS_FRESH=0; fi

  if ((!satisfied)); then
    apt_update
    # newest kubeadm that matches the request, then the same version of kubelet and kubectl
    target=$(apt-cache madison kubeadm 2>/dev/null | awk -F'|' '{ gsub(/[[:space:]]/, "", $2); print $2 }' |
      while read -r v; do if wanted_upstream "$(upstream_of "$v")"; then echo "$v"; fi; done | sort -V | tail -n 1) || true
    if [[ -z $target ]]; then
      available=$(apt-cache madison kubeadm 2>/dev/null | awk -F'|' '{ gsub(/[[:space:]]/, "", $2); print $2 }' | paste -sd' ' - || true)
      die "no kubeadm ${exact:-$minor.x} in $repo; available: ${available:-none}"
    fi
    for p in kubelet kubectl; do
      versions=$(apt-cache madison "$p" 2>/dev/null | awk -F'|' '{ gsub(/[[:space:]]/, "", $2); print $2 }' || true)
      grep -qxF "$target" <<<"$versions" || die "$p $target is not available from $repo (kubeadm $target is)"
    done
    apt_install "kubelet=$target" "kubeadm=$target" "kubectl=$target"
  fi
fi
ensure_held "${PACKAGES[@]}"

# --- kubelet node IP -------------------------------------------------------------------------
printf 'KUBELET_EXTRA_ARGS=--node-ip=%s\n' "$node_ip" >"$WORK/kubelet.default"
put_file "$WORK/kubelet.default" /etc/default/kubelet 644
if ((CHANGED)) && systemctl is-active --quiet kubelet; then
  log "restarting kubelet (node IP changed)"
  systemctl restart kubelet
fi
if [[ $(systemctl is-enabled kubelet 2>/dev/null || true) != enabled ]]; then
  systemctl enable kubelet >&2
fi

# --- can this node's glibc run the kubelet? (bionic has 2.27; newer kubelet builds may need more) --
kubelet_bin=$(command -v kubelet) || die "kubelet is not on PATH after installation"
node_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }' || true)
[[ -n $node_glibc ]] || node_glibc=$(ldd --version 2>/dev/null | awk 'NR == 1 { print $NF }' || true)
if command -v objdump >/dev/null 2>&1; then
  needed=$(objdump -T "$kubelet_bin" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1 || true)
else # no binutils: the version-requirement strings are in the binary's dynamic section
  needed=$(grep -ao 'GLIBC_2\.[0-9][0-9.]*' "$kubelet_bin" | sed 's/^GLIBC_//' | sort -uV | tail -n 1 || true)
fi
if [[ -n $needed && -n $node_glibc ]] &&
  [[ $(printf '%s\n%s\n' "$needed" "$node_glibc" | sort -V | tail -n 1) != "$node_glibc" ]]; then
  die "kubelet $(installed_version kubelet) needs glibc $needed but this node has $node_glibc; pin an older Kubernetes patch (KUBERNETES_VERSION) or use a newer OS"
fi
if ! out=$("$kubelet_bin" --version 2>&1); then
  die "kubelet does not run on this node: $out"
fi
log "$out runs here (needs glibc ${needed:-unknown}, node has ${node_glibc:-unknown})"

kubeadm version -o short
