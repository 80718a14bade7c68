# step install-container-runtime
#   DOCKER_APT_REPO="https://download.docker.com/linux/ubuntu"
#   DOCKER_VERSION="24.0.2"
#   CONTAINERD_VERSION="1.6.21"
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

# step configure-container-runtime
#   SANDBOX_IMAGE="registry.k8s.io/pause:3.10.1"
#   DOCKER_DAEMON_JSON="{\n  \"exec-opts\": [\n    \"native.cgroupdriver=systemd\"\n  ],\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-size\": \"100m\"\n  },\n  \"storage-driver\": \"overlay2\"\n}\n"
#   CONTAINERD_REGISTRY_HOSTS=""
#!/usr/bin/env bash
# configure-container-runtime.sh: containerd config for kubeadm (CRI on, SystemdCgroup, pause image, certs.d mirrors), optional docker daemon.json.
# Safe to re-run: files are rewritten only when their content differs; services restart only when their config changed.
# Inputs (env): SANDBOX_IMAGE, DOCKER_DAEMON_JSON (may be empty), CONTAINERD_REGISTRY_HOSTS (may be empty;
#   "REGISTRY<TAB>BASE64(hosts.toml)" lines), RUNTIME_READY_TIMEOUT_SECONDS (optional, default 60).
set -euo pipefail
export LC_ALL=C

TAG='[configure-container-runtime]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

CONFIG=/etc/containerd/config.toml
CERTS_D=/etc/containerd/certs.d
DAEMON_JSON=/etc/docker/daemon.json
HOSTS_MARKER='# Managed by kubeadm-libvirt (configure-container-runtime.sh); removed when no longer configured.'

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
IMAGE_RE='^[A-Za-z0-9][A-Za-z0-9._/:@-]*$'
sandbox_image=${SANDBOX_IMAGE-}
if [[ ! $sandbox_image =~ $IMAGE_RE ]] || ((${#sandbox_image} > 255)); then
  problems+=("SANDBOX_IMAGE='$sandbox_image': expected an image reference such as registry.k8s.io/pause:3.10.1")
fi

daemon_json=${DOCKER_DAEMON_JSON-}
if [[ -n ${daemon_json//[[:space:]]/} ]]; then
  if [[ ! $daemon_json =~ ^[[:space:]]*\{ ]]; then
    problems+=("DOCKER_DAEMON_JSON: expected a JSON object (starting with '{'), got '${daemon_json:0:40}...'")
  elif command -v python3 >/dev/null 2>&1 &&
    ! printf '%s' "$daemon_json" | python3 -c 'import json, sys; json.load(sys.stdin)' 2>/dev/null; then
    problems+=("DOCKER_DAEMON_JSON: not valid JSON")
  fi
else
  daemon_json=''
fi

ready_timeout=${RUNTIME_READY_TIMEOUT_SECONDS:-60}
if [[ ! $ready_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$ready_timeout < 1)); then
  problems+=("RUNTIME_READY_TIMEOUT_SECONDS='$ready_timeout': expected a whole number of seconds >= 1")
fi

# Registry hosts: decode into $WORK now, so that a bad record is reported before anything changes.
REGISTRY_RE='^(_default|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?)$'
registries=()
declare -A seen_registry=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ -n ${line//[[:space:]]/} ]] || continue
  where="CONTAINERD_REGISTRY_HOSTS line $lineno"
  if [[ $line != *$'\t'* ]]; then
    problems+=("$where: expected 'REGISTRY<TAB>BASE64_OF_HOSTS_TOML', found no tab")
    continue
  fi
  registry=${line%%$'\t'*}
  b64=${line#*$'\t'}
  if [[ ! $registry =~ $REGISTRY_RE ]]; then
    problems+=("$where: registry '$registry' is not a host[:port] name (or _default)")
    continue
  fi
  if [[ -n ${seen_registry[$registry]-} ]]; then
    problems+=("$where: registry '$registry' appears twice")
    continue
  fi
  seen_registry[$registry]=1
  decoded="$WORK/hosts.$lineno"
  if [[ ! $b64 =~ ^[A-Za-z0-9+/]+={0,2}$ ]] || ! printf '%s' "$b64" | base64 -d >"$decoded" 2>/dev/null ||
    [[ ! -s $decoded ]]; then
    problems+=("$where: the hosts.toml for '$registry' is not valid non-empty base64")
    continue
  fi
  { echo "$HOSTS_MARKER"; cat "$decoded"; } >"$decoded.toml"
  registries+=("$registry=$decoded.toml")
done <<<"${CONTAINERD_REGISTRY_HOSTS-}"

if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi

command -v containerd >/dev/null 2>&1 || die "containerd is not installed (run install-container-runtime first)"
command -v ctr >/dev/null 2>&1 || die "ctr (containerd's client) is not installed"

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

# --- /etc/containerd/config.toml -------------------------------------------------------------
# Regenerated from the built-in defaults: the containerd.io package ships a config.toml with
# disabled_plugins = ["cri"], and Debian's points CNI at /usr/lib/cni instead of /opt/cni/bin.
generated="$WORK/config.toml"
{
  echo '# Managed by kubeadm-libvirt (configure-container-runtime.sh): "containerd config default" plus'
  echo '# SystemdCgroup = true, the sandbox (pause) image and config_path for certs.d/*/hosts.toml.'
  containerd config default
} >"$generated"
config_version=$(awk -F= '/^version[[:space:]]*=/ { gsub(/[[:space:]"]/, "", $2); print $2; exit }' "$generated")
registry_section='/\.registry\]$/,/^[[:space:]]*\[/'
case $config_version in
  2) # containerd 1.x
    sed -i \
      -e 's/^\([[:space:]]*SystemdCgroup = \)false$/\1true/' \
      -e "s#^\\([[:space:]]*sandbox_image = \\)\".*\"\$#\\1\"$sandbox_image\"#" \
      -e "$registry_section"' s#^\([[:space:]]*config_path = \)""$#\1"/etc/containerd/certs.d"#' \
      "$generated"
    expected=('SystemdCgroup = true' "sandbox_image = \"$sandbox_image\"" "config_path = \"$CERTS_D\"") ;;
  3) # containerd 2.x writes single-quoted strings
    sed -i \
      -e 's/^\([[:space:]]*SystemdCgroup = \)false$/\1true/' \
      -e "s#^\\([[:space:]]*sandbox = \\)'.*'\$#\\1'$sandbox_image'#" \
      -e "$registry_section"" s#^\\([[:space:]]*config_path = \\)''\$#\\1'/etc/containerd/certs.d'#" \
      "$generated"
    expected=('SystemdCgroup = true' "sandbox = '$sandbox_image'" "config_path = '$CERTS_D'") ;;
  *) die "'containerd config default' produced config version '${config_version:-none}'; only versions 2 and 3 are supported" ;;
esac
for line in "${expected[@]}"; do
  grep -qxF -- "$line" <(sed 's/^[[:space:]]*//' "$generated") ||
    die "could not set '$line' in the generated containerd config (version $config_version, $(containerd --version)): the default config no longer has the expected line"
done
put_file "$generated" "$CONFIG" 644
containerd_changed=$CHANGED

# --- registry hosts (/etc/containerd/certs.d/REGISTRY/hosts.toml) ----------------------------
# containerd reads hosts.toml on every pull, so these need no restart.
declare -A wanted=()
for entry in "${registries[@]}"; do
  registry=${entry%%=*}
  wanted[$registry]=1
  put_file "${entry#*=}" "$CERTS_D/$registry/hosts.toml" 644
done
for f in "$CERTS_D"/*/hosts.toml; do
  [[ -f $f ]] || continue
  registry=$(basename "$(dirname "$f")")
  if [[ -z ${wanted[$registry]-} ]] && [[ $(head -n 1 "$f") == "$HOSTS_MARKER" ]]; then
    log "removing $f (registry $registry is no longer configured)"
    rm -f "$f"
    rmdir --ignore-fail-on-non-empty "$(dirname "$f")"
  fi
done

# --- crictl (from cri-tools) talks to containerd ---------------------------------------------
cat >"$WORK/crictl.yaml" <<'EOF'
# Managed by kubeadm-libvirt (configure-container-runtime.sh).
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
EOF
put_file "$WORK/crictl.yaml" /etc/crictl.yaml 644

# --- docker ----------------------------------------------------------------------------------
docker_installed=0
if command -v dockerd >/dev/null 2>&1; then docker_installed=1; fi
docker_changed=0
if [[ -n $daemon_json ]]; then
  if ((docker_installed)); then
    printf '%s\n' "${daemon_json%$'\n'}" >"$WORK/daemon.json"
    put_file "$WORK/daemon.json" "$DAEMON_JSON" 644
    docker_changed=$CHANGED
  else
    log "docker is not installed: DOCKER_DAEMON_JSON is not written"
  fi
fi

# --- services --------------------------------------------------------------------------------
ensure_service() { # ensure_service UNIT CHANGED: restart if its config changed, else start if stopped; enable
  local unit=$1 changed=$2
  if ((changed)); then
    log "restarting $unit (configuration changed)"
    systemctl restart "$unit"
  elif ! systemctl is-active --quiet "$unit"; then
    log "starting $unit"
    systemctl start "$unit"
  fi
  if [[ $(systemctl is-enabled "$unit" 2>/dev/null || true) != enabled ]]; then
    systemctl enable "$unit" >&2
  fi
}
ensure_service containerd "$containerd_changed"
if ((docker_installed)); then ensure_service docker "$docker_changed"; fi

# --- containerd answers, with the CRI plugin loaded ------------------------------------------
deadline=$((SECONDS + 10#$ready_timeout))
until timeout 10 ctr version >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    systemctl status containerd --no-pager >&2 || true
    die "containerd did not answer on /run/containerd/containerd.sock within ${ready_timeout}s"
  fi
  sleep 2
done
cri_status=$(timeout 10 ctr plugins ls 2>/dev/null | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $NF }' || true)
if [[ $cri_status != ok ]]; then
  journalctl -u containerd --no-pager -n 30 >&2 || true
  die "containerd's CRI plugin is '${cri_status:-missing}', not 'ok' (kubeadm needs it); see the log above"
fi

printf 'containerd %s ready: CRI ok, SystemdCgroup = true, sandbox image %s\n' \
  "$(containerd --version | awk '{ print $3 }')" "$sandbox_image"
