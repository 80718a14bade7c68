#!/usr/bin/env bash
# cluster-hosts.sh: the kubeadm-libvirt block of /etc/hosts ("# BEGIN/END kubeadm-libvirt"): one line per cluster node.
# Safe to re-run: /etc/hosts is rewritten only when its content differs; lines outside the block are kept as they are.
# Inputs (env): CLUSTER_HOSTS ("IPV4 HOSTNAME [ALIAS...]" lines, one per cluster node), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

BEGIN_MARK='# BEGIN kubeadm-libvirt'
END_MARK='# END kubeadm-libvirt'

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input # no waits here, but every step takes (and checks) the same scale input
HOSTNAME_RE='^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
is_hostname() { ((${#1} <= 253)) && [[ $1 =~ $HOSTNAME_RE ]]; }

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
    problem "$where: expected 'IPV4 HOSTNAME [ALIAS...]'"
    continue
  fi
  is_ipv4 "${fields[0]}" || problem "$where: '${fields[0]}' is not an IPv4 address"
  for name in "${fields[@]:1}"; do
    if ! is_hostname "$name"; then
      problem "$where: '$name' is not a valid hostname (letters, digits, '-' and '.')"
    elif [[ -n ${name_ip[$name]-} && ${name_ip[$name]} != "${fields[0]}" ]]; then
      problem "$where: '$name' is already mapped to ${name_ip[$name]}"
    else
      name_ip[$name]=${fields[0]}
    fi
  done
  hosts_lines+=("${fields[*]}")
done <<<"${CLUSTER_HOSTS-}"
if ((${#hosts_lines[@]} == 0)); then
  problem "CLUSTER_HOSTS has no entries: expected newline-separated 'IPV4 HOSTNAME' lines, one per cluster node"
fi
exit_on_problems

# --- host state check (before changing anything) ----------------------------------------------
begin_count=$(grep -cxF -- "$BEGIN_MARK" /etc/hosts || true)
end_count=$(grep -cxF -- "$END_MARK" /etc/hosts || true)
if [[ "$begin_count/$end_count" != 0/0 && "$begin_count/$end_count" != 1/1 ]] ||
  { ((begin_count == 1)) && (($(grep -nxF -- "$BEGIN_MARK" /etc/hosts | cut -d: -f1) > $(grep -nxF -- "$END_MARK" /etc/hosts | cut -d: -f1))); }; then
  die "/etc/hosts has a damaged kubeadm-libvirt block ($begin_count BEGIN / $end_count END markers); fix it by hand"
fi

# --- /etc/hosts: replace the block in place, or append it once -------------------------------
make_work_dir
block=$(printf '%s\n' "$BEGIN_MARK" "${hosts_lines[@]}" "$END_MARK")
BLOCK=$block awk -v begin="$BEGIN_MARK" -v end="$END_MARK" '
  $0 == begin { print ENVIRON["BLOCK"]; skip = 1; done = 1; next }
  $0 == end   { skip = 0; next }
  !skip       { print }
  END         { if (!done) print ENVIRON["BLOCK"] }' /etc/hosts >"$WORK/hosts"
put_file "$WORK/hosts" /etc/hosts 644

printf '%d /etc/hosts entries\n' "${#hosts_lines[@]}"
