#!/usr/bin/env bash
# os-prep.sh: kubeadm host prerequisites: swap off, ufw off, kernel modules, sysctls, tool packages.
# Safe to re-run: every file is rewritten only when its content differs; nothing is appended.
# Inputs (env): KUBE_PROXY_MODE (ipvs|iptables), APT_LOCK_TIMEOUT_SECONDS (optional, default 300), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

MODULES_FILE=/etc/modules-load.d/kubeadm-libvirt.conf
SYSCTL_FILE=/etc/sysctl.d/99-kubeadm-libvirt.conf
PACKAGES=(conntrack socat ipset ipvsadm ebtables ethtool)

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
proxy_mode=${KUBE_PROXY_MODE-}
case $proxy_mode in
  ipvs | iptables) ;;
  *) problem "KUBE_PROXY_MODE=$(printf %q "$proxy_mode"): expected 'ipvs' or 'iptables'" ;;
esac
apt_lock_timeout_input
exit_on_problems

# --- host state checks (before changing anything) ---------------------------------------------
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

make_work_dir

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
if have ufw; then
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
if ((${#missing[@]} > 0)); then apt_install "${missing[@]}"; fi

printf 'os prepared: swap off, kube-proxy mode %s modules loaded\n' "$proxy_mode"
