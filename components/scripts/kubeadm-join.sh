#!/usr/bin/env bash
# kubeadm-join.sh: join this worker to the cluster with the join command read from STDIN (never echoed or logged unredacted).
# Safe to re-run: exits 0 when /etc/kubernetes/kubelet.conf exists; refuses (no auto-reset) after a half-done join.
# Inputs: env NODE_NAME (node name), JOIN_TIMEOUT_SECONDS; STDIN (secret, one line):
#   kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
set -euo pipefail

KUBELET_CONF=/etc/kubernetes/kubelet.conf
LOG_FILE=$LOG_DIR/kubeadm-join.log

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
check_input NODE_NAME is_node_name "expected a lowercase DNS name such as k8s-w1"
seconds_input JOIN_TIMEOUT_SECONDS 1
exit_on_problems

join_line=''
IFS= read -r -t 60 join_line || true # the secret (bounded read): only ever put into kubeadm's argv, never printed

if [[ -f $KUBELET_CONF ]]; then
  log "$KUBELET_CONF exists: this node has already joined; nothing to do"
  printf 'node %s joined\n' "$NODE_NAME"
  exit 0
fi

join_line=${join_line%$'\r'}
# (one problem at a time: each check assumes the ones before it passed)
if [[ $join_line != 'kubeadm join '* ]]; then
  problem "the join command on STDIN does not start with 'kubeadm join ' (it is not shown: it holds a token)"
elif [[ $join_line != *--discovery-token-ca-cert-hash* ]]; then
  problem "the join command on STDIN has no --discovery-token-ca-cert-hash (refusing to join without CA pinning)"
elif [[ ! $join_line =~ ^[A-Za-z0-9\ .:/=_-]+$ ]]; then
  problem "the join command on STDIN contains characters other than letters, digits, spaces and .:/=_-"
fi
exit_on_problems
# Split into words without a here-string (bash < 5.1 backs those with a temp file) and without eval.
read -r -a join_args < <(printf '%s\n' "$join_line")

# --- half-done join? -------------------------------------------------------------------------
for f in /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/pki/ca.crt; do
  if [[ -e $f ]]; then
    die "$f exists but $KUBELET_CONF does not: an earlier 'kubeadm join' stopped half-way; run 'sudo kubeadm reset -f' on this node, then re-run this step"
  fi
done
have kubeadm || die "kubeadm is not installed (run install-kube-packages first)"

# --- join ------------------------------------------------------------------------------------
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<redacted-token>/g; s/(--token[= ])[^ ]+/\1<redacted>/g'; }
ensure_log_dir
log "running kubeadm join as node $NODE_NAME (at most ${JOIN_TIMEOUT_SECONDS}s; log: $LOG_FILE)"
rc=0
(umask 077 && timeout -k 30 "$JOIN_TIMEOUT_SECONDS" "${join_args[@]}" --node-name "$NODE_NAME" 2>&1 | redact >"$LOG_FILE") || rc=$?
if ((rc != 0)); then
  tail -n 60 "$LOG_FILE" >&2
  if is_timeout_exit "$rc"; then
    die "kubeadm join did not finish within JOIN_TIMEOUT_SECONDS=${JOIN_TIMEOUT_SECONDS}s; run 'sudo kubeadm reset -f' on this node before retrying"
  fi
  die "kubeadm join failed (exit $rc, log in $LOG_FILE); if it got past preflight, run 'sudo kubeadm reset -f' on this node before retrying"
fi
[[ -f $KUBELET_CONF ]] || die "kubeadm join exited 0 but $KUBELET_CONF was not written"
log "joined"
printf 'node %s joined\n' "$NODE_NAME"
