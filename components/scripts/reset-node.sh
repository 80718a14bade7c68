#!/usr/bin/env bash
# reset-node.sh: undo kubeadm join on this node: kubeadm reset, CNI config, Kubernetes/Calico iptables chains, IPVS, kubeconfigs.
# Safe to re-run: every step is skipped when there is nothing left to clean; exits 0 on a never-joined node.
# Inputs (env): KUBE_USER (optional: whose ~/.kube/config to remove), RESET_TIMEOUT_SECONDS (optional, default 300),
#               TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

LOG_FILE=$LOG_DIR/kubeadm-reset.log

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
kube_user=${KUBE_USER-}
if [[ -n $kube_user ]] && ! is_login_name "$kube_user"; then
  problem "KUBE_USER='$kube_user': expected a login name such as ubuntu (or empty)"
fi
seconds_input RESET_TIMEOUT_SECONDS 1 "$(scaled 300)"
exit_on_problems

did=()

# --- kubeadm reset ---------------------------------------------------------------------------
state=''
for f in /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/admin.conf \
  /etc/kubernetes/pki/ca.crt /var/lib/kubelet/config.yaml; do
  if [[ -e $f ]]; then state=$f; break; fi
done
if [[ -z $state ]]; then
  log "no kubeadm state on this node; skipping kubeadm reset"
elif ! have kubeadm; then
  warn "$state exists but kubeadm is not installed; skipping kubeadm reset"
else
  log "running kubeadm reset -f (log: $LOG_FILE)"
  ensure_log_dir
  rc=0
  timeout -k "$(scaled 10)" "$RESET_TIMEOUT_SECONDS" kubeadm reset -f >"$LOG_FILE" 2>&1 || rc=$?
  if ((rc == 0)); then
    did+=("kubeadm reset")
  else
    tail -n 30 "$LOG_FILE" >&2
    warn "kubeadm reset failed (exit $rc); continuing with the rest of the cleanup"
  fi
fi

# --- CNI configuration -----------------------------------------------------------------------
# Its contents, not the directory: containerd watches the directory's inode and, once it is removed, never sees a
# config written there again (containerd#6490), so a node joined again without a reboot (a replaced join step)
# would stay NotReady with "cni plugin not initialized" until containerd restarts.
if [[ -n $(find /etc/cni/net.d -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null) ]]; then
  find /etc/cni/net.d -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  did+=("emptied /etc/cni/net.d")
fi

# --- iptables: only when kube-proxy or Calico chains are present -----------------------------
for ipt in iptables ip6tables; do
  if ! have "$ipt" || ! have "$ipt-save"; then continue; fi
  # (captured before grep -q: with pipefail, a writer killed by SIGPIPE would fail the test)
  rules=$("$ipt-save" 2>/dev/null || true)
  if grep -qE '^:(KUBE-|cali-)' <<<"$rules"; then
    log "flushing $ipt (filter, nat, mangle, raw)"
    # Accept first: flushing rules under a DROP input policy would cut this SSH session.
    "$ipt" -P INPUT ACCEPT || warn "$ipt -P INPUT ACCEPT failed"
    "$ipt" -P OUTPUT ACCEPT || warn "$ipt -P OUTPUT ACCEPT failed"
    for table in filter nat mangle raw; do
      { "$ipt" -t "$table" -F && "$ipt" -t "$table" -X; } 2>/dev/null || warn "could not flush $ipt table $table"
    done
    did+=("flushed $ipt")
  fi
done

# --- IPVS ------------------------------------------------------------------------------------
ipvs_table=''
if have ipvsadm; then ipvs_table=$(ipvsadm -Ln 2>/dev/null || true); fi
if grep -qE '^(TCP|UDP|SCTP)' <<<"$ipvs_table"; then
  ipvsadm -C || warn "ipvsadm -C failed"
  did+=("cleared IPVS")
fi

# --- kubeconfigs -----------------------------------------------------------------------------
if [[ -e /root/.kube ]]; then
  rm -rf /root/.kube
  did+=("removed /root/.kube")
fi
if [[ -n $kube_user ]]; then
  if home=$(getent passwd "$kube_user" | cut -d: -f6) && [[ -n $home ]]; then
    if [[ -e $home/.kube/config ]]; then
      rm -f "$home/.kube/config"
      did+=("removed $home/.kube/config")
    fi
  else
    log "user $kube_user does not exist; no user kubeconfig to remove"
  fi
fi

if ((${#did[@]} > 0)); then
  summary=$(printf '%s, ' "${did[@]}")
  printf 'node reset: %s\n' "${summary%, }"
else
  printf 'node reset: nothing to clean\n'
fi
