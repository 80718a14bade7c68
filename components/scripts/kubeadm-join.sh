#!/usr/bin/env bash
# kubeadm-join.sh: join this worker to the cluster with the join command read from STDIN (never echoed or logged unredacted).
# Safe to re-run: exits 0 when /etc/kubernetes/kubelet.conf exists; refuses (no auto-reset) after a half-done join.
# Inputs: env NODE_NAME (node name), JOIN_TIMEOUT_SECONDS; STDIN (secret, one line):
#   kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
set -euo pipefail
export LC_ALL=C

TAG='[kubeadm-join]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }
invalid() { printf '%s invalid input: %s\n' "$TAG" "$1" >&2; }

KUBELET_CONF=/etc/kubernetes/kubelet.conf
LOG_DIR=/var/log/kubeadm-libvirt
LOG_FILE=$LOG_DIR/kubeadm-join.log

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
NODE_NAME_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
node_name=${NODE_NAME-}
if [[ ! $node_name =~ $NODE_NAME_RE ]] || ((${#node_name} > 253)); then
  problems+=("NODE_NAME='$node_name': expected a lowercase DNS name such as k8s-w1")
fi
join_timeout=${JOIN_TIMEOUT_SECONDS-}
if [[ ! $join_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$join_timeout < 1)); then
  problems+=("JOIN_TIMEOUT_SECONDS='$join_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do invalid "$p"; done
  exit 2
fi

join_line=''
IFS= read -r -t 60 join_line || true # the secret (bounded read): only ever put into kubeadm's argv, never printed

if [[ -f $KUBELET_CONF ]]; then
  log "$KUBELET_CONF exists: this node has already joined; nothing to do"
  printf 'node %s joined\n' "$node_name"
  exit 0
fi

join_line=${join_line%$'\r'}
if [[ $join_line != 'kubeadm join '* ]]; then
  invalid "the join command on STDIN does not start with 'kubeadm join ' (it is not shown: it holds a token)"
  exit 2
fi
if [[ $join_line != *--discovery-token-ca-cert-hash* ]]; then
  invalid "the join command on STDIN has no --discovery-token-ca-cert-hash (refusing to join without CA pinning)"
  exit 2
fi
if [[ ! $join_line =~ ^[A-Za-z0-9\ .:/=_-]+$ ]]; then
  invalid "the join command on STDIN contains characters other than letters, digits, spaces and .:/=_-"
  exit 2
fi
# Split into words without a here-string (bash < 5.1 backs those with a temp file) and without eval.
read -r -a join_args < <(printf '%s\n' "$join_line")

# --- half-done join? -------------------------------------------------------------------------
for f in /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/pki/ca.crt; do
  if [[ -e $f ]]; then
    die "$f exists but $KUBELET_CONF does not: an earlier 'kubeadm join' stopped half-way; run 'sudo kubeadm reset -f' on this node, then re-run this step"
  fi
done
command -v kubeadm >/dev/null 2>&1 || die "kubeadm is not installed (run install-kube-packages first)"

# --- join ------------------------------------------------------------------------------------
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<redacted-token>/g; s/(--token[= ])[^ ]+/\1<redacted>/g'; }
[[ -d $LOG_DIR ]] || install -d -m 700 "$LOG_DIR"
log "running kubeadm join as node $node_name (at most ${join_timeout}s; log: $LOG_FILE)"
rc=0
(umask 077 && timeout -k 30 "$((10#$join_timeout))" "${join_args[@]}" --node-name "$node_name" 2>&1 | redact >"$LOG_FILE") || rc=$?
if ((rc != 0)); then
  tail -n 60 "$LOG_FILE" >&2
  if ((rc == 124 || rc == 137)); then
    die "kubeadm join did not finish within JOIN_TIMEOUT_SECONDS=${join_timeout}s; run 'sudo kubeadm reset -f' on this node before retrying"
  fi
  die "kubeadm join failed (exit $rc, log in $LOG_FILE); if it got past preflight, run 'sudo kubeadm reset -f' on this node before retrying"
fi
[[ -f $KUBELET_CONF ]] || die "kubeadm join exited 0 but $KUBELET_CONF was not written"
log "joined"
printf 'node %s joined\n' "$node_name"
