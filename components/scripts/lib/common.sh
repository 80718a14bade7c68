#!/usr/bin/env bash
# lib/common.sh: shell functions shared by the node scripts (logging, input checks, idempotent writes, apt, kubectl).
# components/steps.py prepends it to every step script, which runs as `bash -c '<lib + script>' <step-name>`.
# By hand, from a copy of components/scripts/ on the node ($0 is the step name; STDIN stays free for kubeadm-join):
#   sudo env KEY=VALUE ... bash -c "$(cat lib/common.sh os-prep.sh)" os-prep
set -euo pipefail

# Only definitions below: nothing here changes the node until a script calls it.

# Every step runs under sudo: the C locale for parseable tool output, no debconf prompts from apt, and HOME=/root
# because sudo on bionic keeps the caller's HOME (kubectl and gpg would write their caches there).
export LC_ALL=C DEBIAN_FRONTEND=noninteractive HOME=/root

# --- logging (stderr; stdout is kept for the one-line result of each step) ---------------------
TAG=${0##*/}
TAG="[${TAG%.sh}]" # $0 is the step name, e.g. [os-prep]
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
warn() { printf '%s WARNING: %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- inputs: every check records its problem; exit_on_problems reports them all (exit 2) -------
PROBLEMS=()
problem() { PROBLEMS+=("$*"); }
exit_on_problems() {
  ((${#PROBLEMS[@]} > 0)) || return 0
  local p
  for p in "${PROBLEMS[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
}

# check_input NAME PREDICATE EXPECTED: records "NAME='value': EXPECTED" unless PREDICATE accepts env NAME.
check_input() {
  local value=${!1-}
  "$2" "$value" || problem "$1='$value': $3"
}

# list_input ARRAY NAME PREDICATE WHAT MIN: env NAME split on blanks into ARRAY; records a problem for fewer than MIN
# items and for every item PREDICATE refuses ("NAME: 'item' is not WHAT").
list_input() {
  local -n list=$1
  local name=$2 predicate=$3 what=$4 min=$5 item
  read -r -a list <<<"${!name-}"
  ((${#list[@]} >= min)) || problem "$name has ${#list[@]} items: expected at least $min, space-separated, each $what"
  for item in "${list[@]}"; do
    "$predicate" "$item" || problem "$name: '$item' is not $what"
  done
}

# seconds_input NAME MIN [DEFAULT]: env NAME (DEFAULT when unset or empty; required without one) must be a whole
# number of seconds >= MIN; NAME is set to it without leading zeros, or a problem is recorded.
seconds_input() {
  local name=$1 min=$2 value expected='a whole number of seconds'
  if (($# > 2)); then value=${!name:-$3}; else value=${!name-}; fi
  if [[ $value =~ ^[0-9]{1,6}$ ]] && ((10#$value >= min)); then
    printf -v "$name" '%d' "$((10#$value))"
  else
    ((min == 0)) || expected+=" >= $min"
    problem "$name='$value': expected $expected"
  fi
}

is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o
  for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
}
NODE_NAME_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
is_node_name() { ((${#1} <= 253)) && [[ $1 =~ $NODE_NAME_RE ]]; } # a Kubernetes node name (lowercase DNS name)
is_login_name() { [[ $1 =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; }
is_http_url() { [[ $1 =~ ^https?://[^[:space:]]+$ ]]; }
is_token_id() { [[ $1 =~ ^[a-z0-9]{6}$ ]]; } # the public half of a kubeadm bootstrap token
is_uuid() { [[ $1 =~ ^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$ ]]; }
is_image_ref() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]]; }

# --- time ------------------------------------------------------------------------------------
# timeout_scale_input: checks TIMEOUT_SCALE_PERCENT (the stack's timeoutScale x 100, 100 to 2000; optional, default
# 100 for runs by hand). Call it first among a script's inputs: the other inputs' defaults are scaled with it.
timeout_scale_input() {
  local value=${TIMEOUT_SCALE_PERCENT:-100}
  if [[ $value =~ ^[0-9]{1,4}$ ]] && ((10#$value >= 100 && 10#$value <= 2000)); then
    TIMEOUT_SCALE_PERCENT=$((10#$value))
  else
    problem "TIMEOUT_SCALE_PERCENT='$value': expected timeoutScale x 100, a whole number from 100 to 2000"
    TIMEOUT_SCALE_PERCENT=100
  fi
}
# scaled SECONDS: SECONDS x timeoutScale, rounded up (as components/config.py TimeoutScale.seconds). For the short
# bounds inside a script (kubectl --request-timeout, curl, the grace of timeout -k): on a slow (TCG) host a single
# API call takes longer too, and a bound that stayed short would fail every attempt until the step's deadline.
scaled() { echo $((($1 * ${TIMEOUT_SCALE_PERCENT:-100} + 99) / 100)); }

# remaining: seconds left before the script's DEADLINE (a $SECONDS value), at least 1: the bound for `timeout`.
remaining() {
  local left=$((DEADLINE - SECONDS))
  ((left > 0)) || left=1
  echo "$left"
}
is_timeout_exit() { (($1 == 124 || $1 == 137)); } # timeout(1): 124 ran out of time, 137 had to be killed

# --- files -----------------------------------------------------------------------------------
# make_work_dir: WORK is a temporary directory, removed when the script exits.
make_work_dir() {
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
}

ensure_dir() { [[ -d $1 ]] || install -d -m "$2" "$1"; } # ensure_dir DIR MODE: create DIR if it is missing

LOG_DIR=/var/log/kubeadm-libvirt # full logs of kubeadm init/join/reset, readable by root only
ensure_log_dir() { ensure_dir "$LOG_DIR" 700; }

# put_file SRC DEST MODE [OWNER [GROUP]]: install SRC as DEST (owner root:root by default) only when the content
# differs, so re-runs keep the mtime; otherwise only fixes mode and owner. Sets CHANGED=1 when written, else 0.
CHANGED=0
put_file() {
  local src=$1 dest=$2 mode=$3 owner=${4:-root} group=${5:-root}
  CHANGED=0
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    [[ $(stat -c %a "$dest") == "$mode" ]] || chmod "$mode" "$dest"
    [[ $(stat -c %U:%G "$dest") == "$owner:$group" ]] || chown "$owner:$group" "$dest"
    return 0
  fi
  install -D -m "$mode" -o "$owner" -g "$group" "$src" "$dest"
  CHANGED=1
  log "wrote $dest"
}

# --- services --------------------------------------------------------------------------------
ensure_enabled() { # ensure_enabled UNIT: enable UNIT at boot unless it already is
  if [[ $(systemctl is-enabled "$1" 2>/dev/null || true) != enabled ]]; then
    systemctl enable "$1" >&2
  fi
}

# --- apt -------------------------------------------------------------------------------------
# apt_lock_timeout_input: checks APT_LOCK_TIMEOUT_SECONDS (optional, default 300 scaled); call it with the other inputs.
apt_lock_timeout_input() { seconds_input APT_LOCK_TIMEOUT_SECONDS 0 "$(scaled 300)"; }

# apt_get_locked CMD ARG...: run an apt tool (apt-get, apt-mark) that takes the dpkg/apt locks; its output goes to
# stderr. On first boot apt-daily/unattended-upgrades can take a lock at any moment, also between a check that
# the locks are free and the command (a race a check cannot close), so the command itself must survive a taken
# lock: apt >= 1.9.11 waits for the dpkg lock with -o DPkg::Lock::Timeout=N; bionic's apt 1.6 has no such
# option, and no apt waits for the lists lock of `apt-get update`. So a run that fails on a lock (exit 100 with
# "Could not get lock" and the like: nothing was changed) is retried until APT_LOCK_TIMEOUT_SECONDS after the
# first attempt; any other failure is returned as it is.
APT_LOCK_ERROR='Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock|dpkg frontend lock|dpkg status database is locked'
APT_LOCK_RETRY_INTERVAL=2
APT_HAS_LOCK_TIMEOUT='' # 1 or 0 once apt_has_lock_timeout has asked apt-get --version
APT_STDERR='' # what the last apt_get_locked run printed on stderr (apt's W: and E: lines), for callers to inspect
apt_has_lock_timeout() {
  if [[ -z $APT_HAS_LOCK_TIMEOUT ]]; then
    local version
    version=$(apt-get --version 2>/dev/null | awk 'NR == 1 { print $2 }' || true) # "apt 2.6.1 (amd64)"
    APT_HAS_LOCK_TIMEOUT=0
    if [[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]] && [[ $(printf '%s\n%s\n' 1.9.11 "$version" | sort -V | head -n 1) == 1.9.11 ]]; then
      APT_HAS_LOCK_TIMEOUT=1
    fi
  fi
  ((APT_HAS_LOCK_TIMEOUT))
}
apt_get_locked() {
  apt_lock_timeout_input
  exit_on_problems
  local tool=$1 give_up=$((SECONDS + APT_LOCK_TIMEOUT_SECONDS)) left rc err lock_line options what arg
  shift
  what=$tool # for messages: the tool and its command, e.g. "apt-get update"
  for arg in "$@"; do
    if [[ $arg != -* ]]; then what+=" $arg"; break; fi
  done
  while :; do
    left=$((give_up - SECONDS))
    ((left > 0)) || left=0
    options=()
    if apt_has_lock_timeout; then options=(-o "DPkg::Lock::Timeout=$left"); fi
    rc=0
    { err=$("$tool" "${options[@]}" "$@" 2>&1 1>&3) || rc=$?; } 3>&2
    # shellcheck disable=SC2034 # read by the scripts (os-apt-sources.sh)
    APT_STDERR=$err
    if ((rc == 0)); then
      if [[ -n $err ]]; then printf '%s\n' "$err" >&2; fi
      return 0
    fi
    lock_line=$(grep -E -m 1 "$APT_LOCK_ERROR" <<<"$err" || true)
    if ((rc != 100)) || [[ -z $lock_line ]]; then
      printf '%s\n' "$err" >&2
      return "$rc"
    fi
    if ((SECONDS >= give_up)); then
      printf '%s\n' "$err" >&2
      die "$what could not get the dpkg/apt lock within ${APT_LOCK_TIMEOUT_SECONDS}s (APT_LOCK_TIMEOUT_SECONDS; another apt/dpkg, e.g. unattended-upgrades, still holds it: '$lock_line'); lock files were left untouched: retry later, or raise timeoutScale"
    fi
    left=$((give_up - SECONDS))
    log "$what: a dpkg/apt lock is taken ('$lock_line'); retrying for at most ${left}s more"
    sleep "$((left < APT_LOCK_RETRY_INTERVAL ? left : APT_LOCK_RETRY_INTERVAL))"
  done
}

# apt_update: apt-get update at most once per run, and again only after put_apt_file changed a source or key.
LISTS_FRESH=0
apt_update() {
  ((LISTS_FRESH)) && return 0
  log "apt-get update"
  apt_get_locked apt-get -qq update
  LISTS_FRESH=1
}
apt_install() { # apt_install PKG[=VERSION]...: keeps changed conffiles; may downgrade and replace held packages
  apt_update
  log "apt-get install $*"
  apt_get_locked apt-get install -y -qq --no-install-recommends --allow-downgrades --allow-change-held-packages \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

put_apt_file() { # put_apt_file SRC DEST: put_file for apt sources and keyrings (the next apt_update runs again)
  put_file "$1" "$2" 644
  if ((CHANGED)); then LISTS_FRESH=0; fi
}

# install_apt_key URL KEYRING: fetch a repository's armored OpenPGP key into KEYRING (binary, for signed-by=),
# installing curl, gnupg and ca-certificates first when missing. Needs make_work_dir.
install_apt_key() {
  local url=$1 keyring=$2 prereqs=()
  have curl || prereqs+=(curl)
  have gpg || prereqs+=(gnupg)
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] || prereqs+=(ca-certificates)
  if ((${#prereqs[@]} > 0)); then apt_install "${prereqs[@]}"; fi

  log "fetching $url"
  curl -fsSL --connect-timeout "$(scaled 15)" --max-time "$(scaled 60)" --retry 3 --retry-delay 2 "$url" -o "$WORK/apt-key.asc" ||
    die "could not download the repository key from $url"
  install -d -m 700 "$WORK/gnupg"
  gpg --batch --yes --homedir "$WORK/gnupg" --dearmor -o "$WORK/apt-key.gpg" "$WORK/apt-key.asc" ||
    die "$url is not an OpenPGP public key"
  ensure_dir /etc/apt/keyrings 755 # absent before Debian 12 / Ubuntu 22.04
  put_apt_file "$WORK/apt-key.gpg" "$keyring"
}

# os_release FIELD: a field of /etc/os-release without quotes, e.g. ID (ubuntu, debian) or VERSION_CODENAME (bionic,
# bookworm); empty when absent. Read, never sourced: it is data, and sourcing would run whatever it holds.
OS_RELEASE=/etc/os-release
os_release() { { sed -n "s/^$1=//p" "$OS_RELEASE" 2>/dev/null || true; } | tr -d "\"'"; }

is_installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]; }
installed_version() { # installed_version PKG: its installed version, or nothing
  if is_installed "$1"; then dpkg-query -W -f='${Version}' "$1"; fi
}
upstream_of() { # 5:24.0.2-1~ubuntu.18.04~bionic -> 24.0.2, 1.34.3-1.1 -> 1.34.3 (drop epoch and Debian revision)
  local v=$1
  [[ $v == *:* ]] && v=${v#*:}
  printf '%s' "${v%-*}"
}
available_versions() { # available_versions PKG: the versions in the apt lists, newest first, one per line
  apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/[[:space:]]/, "", $2); print $2 }'
}
ensure_held() { # ensure_held PKG...: apt-mark hold the packages that are not held yet
  local held p
  held=$(apt-mark showhold)
  for p in "$@"; do
    if ! grep -qxF "$p" <<<"$held"; then
      log "apt-mark hold $p"
      apt_get_locked apt-mark hold "$p" # (it runs dpkg, which takes the dpkg lock)
    fi
  done
}

# --- kubectl on the control plane ------------------------------------------------------------
ADMIN_CONF=/etc/kubernetes/admin.conf
kc() { kubectl --kubeconfig "$ADMIN_CONF" "$@"; }

# is_transient_api_error TEXT: kubectl's (or kubeadm's) error TEXT says the API server was slow or briefly away (a control plane
# starved of CPU, e.g. under TCG, or restarting), not that the request was wrong: the same request can pass later.
is_transient_api_error() {
  case $1 in
    *"Error from server (Timeout)"* | *"Error from server (ServerTimeout)"* | *"Error from server (ServiceUnavailable)"*) ;;
    *"Error from server (TooManyRequests)"* | *"etcdserver: request timed out"* | *"etcdserver: leader changed"*) ;;
    *"unable to return a response in the time allotted"*) ;; # the Timeout status as kubeadm prints it (no kubectl prefix)
    *"the server is currently unable to handle the request"* | *"was refused - did you specify the right host or port"*) ;;
    *"net/http: TLS handshake timeout"* | *"i/o timeout"* | *"http2: client connection lost"*) ;;
    *"connect: connection refused"* | *"Unable to connect to the server: unexpected EOF"*) ;; # e.g. kubectl's openapi download
    # Go's HTTP client gave up waiting for the answer (the client's own timeout: kubeadm's 10 s, the 32 s of kubectl's
    # openapi download for its validation), as both did against the lab's TCG control plane right after Calico's CRDs.
    *"Client.Timeout exceeded while awaiting headers"*) ;;
    # The same client deadline reached while the request was being sent (lab run 14: kubeadm token delete against a
    # control plane at load average 30), which Go reports without the words above.
    *"context deadline exceeded"*) ;;
    *) return 1 ;;
  esac
}

# kc_retrying WHAT INPUT ARG...: kubectl ARG... with INPUT on stdin, bounded by the script's DEADLINE and sent again
# every 5 s while it fails for a reason that passes: is_transient_api_error, or discovery not listing yet the kinds
# of CRDs created a moment ago. Returns 1 once DEADLINE is reached, for the caller to report with its state; any
# other failure dies. Callers send only requests that are safe to repeat (apply, wait).
kc_retrying() {
  local what=$1 input=$2 rc err
  shift 2
  while :; do
    rc=0
    { err=$(timeout -k "$(scaled 10)" "$(remaining)" kubectl --kubeconfig "$ADMIN_CONF" "$@" 2>&1 1>&3 <<<"$input"); } 3>&2 || rc=$?
    ((rc != 0)) || return 0
    [[ -z $err ]] || printf '%s\n' "$err" >&2
    ! is_timeout_exit "$rc" || return 1
    is_transient_api_error "$err" || [[ $err == *"no matches for kind"* || $err == *"ensure CRDs are installed"* ]] ||
      die "$what failed (kubectl exit $rc, see above)"
    ((SECONDS < DEADLINE)) || return 1
    log "$what: the API server did not take the request yet; sending it again in 5 s"
    sleep 5
  done
}

# kc_apply WHAT SOURCE [OPTION...]: kubectl apply OPTION... -f SOURCE (a file, a URL, or - for the text on stdin),
# through kc_retrying: a second apply of the same objects finishes what a failed one left half done.
kc_apply() {
  local what=$1 source=$2 manifest=''
  shift 2
  if [[ $source == - ]]; then manifest=$(cat); fi
  log "applying $what"
  kc_retrying "applying $what" "$manifest" apply "$@" -f "$source"
}

need_admin_conf() { # die unless kubectl and the cluster admin kubeconfig are there (kubeadm-init ran)
  have kubectl || die "kubectl is not installed"
  [[ -f $ADMIN_CONF ]] || die "$ADMIN_CONF does not exist: run kubeadm-init first"
}
