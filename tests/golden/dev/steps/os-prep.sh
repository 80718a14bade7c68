# step os-prep
#   CLUSTER_HOSTS="192.168.141.130 kubernetes-master\n192.168.141.131 kubernetes-slave1\n192.168.141.132 kubernetes-slave2"
#   KUBE_PROXY_MODE="ipvs"
#!/usr/bin/env bash
# os-prep.sh: kubeadm host prerequisites: swap off, ufw off, kernel modules, sysctls, tool packages, /etc/hosts block.
# Safe to re-run: every file is rewritten only when its content differs; nothing is appended.
# Inputs (env): CLUSTER_HOSTS ("IP NAME [ALIAS...]" lines), KUBE_PROXY_MODE (ipvs|iptables),
#               APT_LOCK_TIMEOUT_SECONDS (optional, default 300).
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

TAG='[os-prep]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

MODULES_FILE=/etc/modules-load.d/kubeadm-libvirt.conf
SYSCTL_FILE=/etc/sysctl.d/99-kubeadm-libvirt.conf
BEGIN_MARK='# BEGIN kubeadm-libvirt'
END_MARK='# END kubeadm-libvirt'
PACKAGES=(conntrack socat ipset ipvsadm ebtables ethtool)

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o
  for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
}
HOSTNAME_RE='^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
is_hostname() { ((${#1} <= 253)) && [[ $1 =~ $HOSTNAME_RE ]]; }

proxy_mode=${KUBE_PROXY_MODE-}
case $proxy_mode in
  ipvs | iptables) ;;
  *) problems+=("KUBE_PROXY_MODE=$(printf %q "$proxy_mode"): expected 'ipvs' or 'iptables'") ;;
esac

lock_timeout=${APT_LOCK_TIMEOUT_SECONDS:-300}
if [[ ! $lock_timeout =~ ^[0-9]{1,6}$ ]]; then
  problems+=("APT_LOCK_TIMEOUT_SECONDS=$(printf %q "$lock_timeout"): expected a whole number of seconds")
fi

hosts_lines=()
declare -A name_ip=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  read -r -a fields <<<"$line"
  ((${#fields[@]} > 0)) || continue # blank lines are ignored
  where="CLUSTER_HOSTS line $lineno '$line'"
  if ((${#fields[@]} < 2)); then
    problems+=("$where: expected 'IPV4 HOSTNAME [ALIAS...]'")
    continue
  fi
  is_ipv4 "${fields[0]}" || problems+=("$where: '${fields[0]}' is not an IPv4 address")
  for name in "${fields[@]:1}"; do
    if ! is_hostname "$name"; then
      problems+=("$where: '$name' is not a valid hostname (letters, digits, '-' and '.')")
    elif [[ -n ${name_ip[$name]-} && ${name_ip[$name]} != "${fields[0]}" ]]; then
      problems+=("$where: '$name' is already mapped to ${name_ip[$name]}")
    else
      name_ip[$name]=${fields[0]}
    fi
  done
  hosts_lines+=("${fields[*]}")
done <<<"${CLUSTER_HOSTS-}"
if ((${#hosts_lines[@]} == 0)); then
  problems+=("CLUSTER_HOSTS has no entries: expected newline-separated 'IPV4 HOSTNAME' lines, one per cluster node")
fi

if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi

# --- host state checks (before changing anything) ---------------------------------------------
begin_count=$(grep -cxF -- "$BEGIN_MARK" /etc/hosts || true)
end_count=$(grep -cxF -- "$END_MARK" /etc/hosts || true)
if [[ "$begin_count/$end_count" != 0/0 && "$begin_count/$end_count" != 1/1 ]] ||
  { ((begin_count == 1)) && (($(grep -nxF -- "$BEGIN_MARK" /etc/hosts | cut -d: -f1) > $(grep -nxF -- "$END_MARK" /etc/hosts | cut -d: -f1))); }; then
  die "/etc/hosts has a damaged kubeadm-libvirt block ($begin_count BEGIN / $end_count END markers); fix it by hand"
fi

modules=(overlay br_netfilter)
if [[ $proxy_mode == ipvs ]]; then
  # kernels < 4.19 (bionic GA 4.15) split out nf_conntrack_ipv4; newer ones only have nf_conntrack.
  if modinfo nf_conntrack_ipv4 >/dev/null 2>&1; then conntrack_module=nf_conntrack_ipv4; else conntrack_module=nf_conntrack; fi
  modules+=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh "$conntrack_module")
fi
for m in "${modules[@]}"; do
  if ! modinfo "$m" >/dev/null 2>&1 && [[ ! -d /sys/module/$m ]]; then
    die "kernel module '$m' is not available for kernel $(uname -r) (needed for KUBE_PROXY_MODE=$proxy_mode)"
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# put_file SRC DEST MODE: install SRC as DEST only when the content differs, so re-runs keep the mtime.
put_file() {
  local src=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    [[ $(stat -c %a "$dest") == "$mode" ]] || chmod "$mode" "$dest"
    return 0
  fi
  install -D -m "$mode" -o root -g root "$src" "$dest"
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

is_installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]; }

# --- swap ------------------------------------------------------------------------------------
if [[ -n $(awk 'NR > 1' /proc/swaps) ]]; then
  log "turning swap off"
  swapoff -a
  [[ -z $(awk 'NR > 1' /proc/swaps) ]] || die "swap is still active after 'swapoff -a': $(awk 'NR > 1 {print $1}' /proc/swaps | paste -sd' ' -)"
fi
if [[ -f /etc/fstab ]]; then
  awk '/^[[:space:]]*#/ || $3 != "swap" { print; next } { print "#" $0 "  # disabled by kubeadm-libvirt (kubelet needs swap off)" }' \
    /etc/fstab >"$WORK/fstab"
  put_file "$WORK/fstab" /etc/fstab 644
fi

# --- firewall --------------------------------------------------------------------------------
if command -v ufw >/dev/null 2>&1; then
  # (outputs are captured before grep -q: with pipefail, a writer killed by SIGPIPE fails the test)
  ufw_status=$(ufw status 2>/dev/null || true)
  if grep -q '^Status: active' <<<"$ufw_status"; then
    log "disabling ufw (cluster traffic: 6443, 10250, BGP/VXLAN/IPIP, NodePorts)"
    ufw disable >&2
  fi
else
  log "ufw is not installed; nothing to disable"
fi

# --- kernel modules and sysctls --------------------------------------------------------------
{
  echo '# Managed by kubeadm-libvirt (os-prep.sh); local changes are overwritten.'
  printf '%s\n' "${modules[@]}"
} >"$WORK/modules"
put_file "$WORK/modules" "$MODULES_FILE" 644
for m in "${modules[@]}"; do modprobe "$m"; done

cat >"$WORK/sysctl" <<'EOF'
# Managed by kubeadm-libvirt (os-prep.sh); local changes are overwritten.
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
EOF
put_file "$WORK/sysctl" "$SYSCTL_FILE" 644
sysctl -q -p "$SYSCTL_FILE" >/dev/null

# --- packages --------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
if ((${#missing[@]} > 0)); then
  wait_for_apt_locks
  log "apt-get update"
  apt-get -qq update >&2
  wait_for_apt_locks
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >&2
fi

# --- /etc/hosts ------------------------------------------------------------------------------
block=$(printf '%s\n' "$BEGIN_MARK" "${hosts_lines[@]}" "$END_MARK")
BLOCK=$block awk -v begin="$BEGIN_MARK" -v end="$END_MARK" '
  $0 == begin { print ENVIRON["BLOCK"]; skip = 1; done = 1; next }
  $0 == end   { skip = 0; next }
  !skip       { print }
  END         { if (!done) print ENVIRON["BLOCK"] }' /etc/hosts >"$WORK/hosts"
put_file "$WORK/hosts" /etc/hosts 644

printf 'os prepared: swap off, kube-proxy mode %s modules loaded, %d /etc/hosts entries\n' \
  "$proxy_mode" "${#hosts_lines[@]}"
