#!/usr/bin/env bash
# kubeadm-join.sh: join this worker with JOIN_CONFIGURATION, completed by the token and CA hash of the join command on STDIN (a secret: never echoed, logged redacted).
# Safe to re-run: exits 0 when /etc/kubernetes/kubelet.conf exists; a half-done join (a VM powered off mid-join) is reset first.
# Inputs: env NODE_NAME, JOIN_CONFIGURATION (kubeadm JoinConfiguration with the two placeholders below), JOIN_TIMEOUT_SECONDS, JOIN_TOKEN_STEP (the step that minted
#   the token), STALE_NODE_WAIT_SECONDS and TIMEOUT_SCALE_PERCENT (optional); STDIN (one line): kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
set -euo pipefail

KUBELET_CONF=/etc/kubernetes/kubelet.conf
LOG_FILE=$LOG_DIR/kubeadm-join.log
RESET_LOG_FILE=$LOG_DIR/kubeadm-join-reset.log
# A config file, not flags: kubeadm's timeouts (scaled by the stack) exist only there, and kubeadm refuses --config
# mixed with --token. The secret parts arrive on STDIN and replace these placeholders (components/kubeadm_config.py).
TOKEN_PLACEHOLDER=JOIN-TOKEN-FROM-STDIN
HASH_PLACEHOLDER=CA-CERT-HASH-FROM-STDIN
# What kubeadm's token discovery says when the token id is unknown or its secret does not match (cmd/kubeadm/app/discovery/token).
TOKEN_REFUSED='is invalid for this cluster or it has expired|could not find a JWS signature in the cluster-info ConfigMap|failed to verify JWS signature of received cluster info'
# What kubeadm's kubelet-start phase says, before the TLS bootstrap, when the cluster lists a Ready Node of this name
# (cmd/kubeadm/app/cmd/phases/join/kubelet.go).
NODE_STILL_READY='a Node with name "[^"]+" and status "Ready" already exists in the cluster'

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
check_input NODE_NAME is_node_name "expected a lowercase DNS name such as k8s-w1"
join_config=${JOIN_CONFIGURATION-}
endpoint=''
if ! grep -q '^kind: *JoinConfiguration *$' <<<"$join_config"; then
  problem "JOIN_CONFIGURATION: expected a kubeadm 'kind: JoinConfiguration' document"
else
  for placeholder in "$TOKEN_PLACEHOLDER" "$HASH_PLACEHOLDER"; do
    count=$(grep -c -- "$placeholder" <<<"$join_config" || true)
    ((count == 1)) || problem "JOIN_CONFIGURATION: expected the placeholder $placeholder once, found it $count times"
  done
  endpoint=$(awk '$1 == "apiServerEndpoint:" { gsub(/["'\'']/, "", $2); print $2; exit }' <<<"$join_config")
  [[ -n $endpoint ]] || problem "JOIN_CONFIGURATION: no discovery.bootstrapToken.apiServerEndpoint"
fi
seconds_input JOIN_TIMEOUT_SECONDS 1
# How long a Ready Node of this name may stand in the way. When this machine's own earlier membership is that Node (its
# VM replaced while its disk, and so its kubelet, survived; the replaced join's delete then reset it), the node
# controller marks it NotReady once its heartbeats stop: node-monitor-grace-period, 50 s, plus the 5 s monitor period,
# later when a slow host's controller-manager lags. A running machine of the same name never stops: give up then.
seconds_input STALE_NODE_WAIT_SECONDS 1 "$(scaled 240)"
[[ ${JOIN_TOKEN_STEP-} =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] ||
  problem "JOIN_TOKEN_STEP='${JOIN_TOKEN_STEP-}': expected the name of the Pulumi step that mints this worker's token, e.g. k8s-cp-k8s-w1-join-command"
exit_on_problems

join_line=''
IFS= read -r -t "$(scaled 60)" join_line || true # the secret (bounded read): only its token and hash are used

if [[ -f $KUBELET_CONF ]]; then
  log "$KUBELET_CONF exists: this node has already joined; nothing to do"
  printf 'node %s joined\n' "$NODE_NAME"
  exit 0
fi

join_line=${join_line%$'\r'}
# (one problem at a time: each check assumes the ones before it passed)
if [[ $join_line != 'kubeadm join '* ]]; then
  problem "the join command on STDIN does not start with 'kubeadm join ' (it is not shown: it holds a token)"
elif [[ ! $join_line =~ ^[A-Za-z0-9\ .:/=_-]+$ ]]; then
  problem "the join command on STDIN contains characters other than letters, digits, spaces and .:/=_-"
fi
exit_on_problems
# Split into words without a here-string (bash < 5.1 backs those with a temp file) and without eval.
read -r -a join_args < <(printf '%s\n' "$join_line")
# kubeadm token create --print-join-command: kubeadm join ENDPOINT --token T --discovery-token-ca-cert-hash H
token=''
ca_hash=''
for ((i = 3; i < ${#join_args[@]}; i += 2)); do
  case ${join_args[i]} in
    --token) token=${join_args[i + 1]-} ;;
    --discovery-token-ca-cert-hash) ca_hash=${join_args[i + 1]-} ;;
    --*) problem "the join command on STDIN has the unexpected option ${join_args[i]}" ;;
    *) problem "the join command on STDIN has an unexpected word at position $((i + 1)) (not shown)" ;;
  esac
done
if [[ ${join_args[2]-} != "$endpoint" ]]; then
  problem "the join command on STDIN is for '${join_args[2]-}', JOIN_CONFIGURATION for '$endpoint' (both must name the control plane)"
fi
[[ $token =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || problem "the join command on STDIN has no valid --token (it is not shown)"
[[ $ca_hash =~ ^sha256:[0-9a-f]{64}$ ]] ||
  problem "the join command on STDIN has no --discovery-token-ca-cert-hash sha256:<64 hex digits> (refusing to join without CA pinning)"
exit_on_problems

# --- half-done join? -------------------------------------------------------------------------
have kubeadm || die "kubeadm is not installed (run install-kube-packages first)"
# An earlier join stopped half-way (the VM powered off or rebooted during it, a timeout, a failure past preflight):
# its files would fail kubeadm's preflight. A worker holds no cluster state of its own (unlike the control plane's
# etcd, which kubeadm-init.sh never resets), so what it left is undone with kubeadm reset and the join runs again.
undo_half_done_join() { # undo_half_done_join WHY: kubeadm reset -f when a join left its files (WHY says which join and how it ended)
  local f
  for f in /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/pki/ca.crt; do
    [[ -e $f ]] || continue
    ensure_log_dir
    warn "$f exists but $KUBELET_CONF does not: $1; undoing it with kubeadm reset -f (log: $RESET_LOG_FILE)"
    if ! timeout -k "$(scaled 10)" "$(scaled 300)" kubeadm reset -f >"$RESET_LOG_FILE" 2>&1; then
      tail -n 30 "$RESET_LOG_FILE" >&2
      die "kubeadm reset -f of the half-done join failed (log: $RESET_LOG_FILE); run it on this node by hand, then re-run this step"
    fi
    log "the half-done join is undone"
    return 0
  done
}
undo_half_done_join "an earlier 'kubeadm join' stopped half-way"

# --- join ------------------------------------------------------------------------------------
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<redacted-token>/g; s/(--token[= ])[^ ]+/\1<redacted>/g'; }
make_work_dir
config_file=$WORK/kubeadm-join.yaml # holds the token: mode 600, removed when the script exits
# Double-quoted YAML scalars: a token of digits only would otherwise read as a number.
join_config=${join_config/"$TOKEN_PLACEHOLDER"/"\"$token\""}
join_config=${join_config/"$HASH_PLACEHOLDER"/"\"$ca_hash\""}
(umask 077 && printf '%s\n' "$join_config" >"$config_file")
if kubeadm config validate --help >/dev/null 2>&1; then
  kubeadm config validate --config "$config_file" 2>&1 | redact >&2 || die "kubeadm rejected JOIN_CONFIGURATION (see above)"
fi
ensure_log_dir
stale_deadline=$((SECONDS + STALE_NODE_WAIT_SECONDS))
retry_interval=$(scaled 10)
while :; do
  log "running kubeadm join as node $NODE_NAME (at most ${JOIN_TIMEOUT_SECONDS}s; log: $LOG_FILE)"
  rc=0
  (umask 077 && timeout -k "$(scaled 30)" "$JOIN_TIMEOUT_SECONDS" kubeadm join --config "$config_file" 2>&1 | redact >"$LOG_FILE") || rc=$?
  ((rc != 0)) || break
  if is_timeout_exit "$rc"; then
    tail -n 60 "$LOG_FILE" >&2
    die "kubeadm join did not finish within JOIN_TIMEOUT_SECONDS=${JOIN_TIMEOUT_SECONDS}s; pulumi up runs this step again, resetting what it left first"
  fi
  # Checked before the TLS bootstrap, so nothing of the cluster changed; only its CA and bootstrap kubeconfig are here.
  if grep -E -q "$NODE_STILL_READY" "$LOG_FILE"; then
    if ((SECONDS + retry_interval <= stale_deadline)); then
      log "the cluster still lists a Ready Node named $NODE_NAME, most likely this machine's earlier membership whose kubelet has just stopped; joining again in ${retry_interval}s, once the node controller has marked it NotReady (at most ${STALE_NODE_WAIT_SECONDS}s in all)"
      sleep "$retry_interval"
      undo_half_done_join "the join refused for the Ready Node left them"
      continue
    fi
    tail -n 60 "$LOG_FILE" >&2
    die "the cluster still lists a Ready Node named $NODE_NAME after ${STALE_NODE_WAIT_SECONDS}s (STALE_NODE_WAIT_SECONDS): another running machine has joined under this name. Give this worker another name, or remove that machine (kubectl drain, then kubectl delete node $NODE_NAME, on the control plane), then pulumi up runs this step again"
  fi
  tail -n 60 "$LOG_FILE" >&2
  # Discovery (before anything is written here) found no valid token: it was deleted, or replaced by a newer mint,
  # after the step that minted it handed it over (it has no expiry). Only a fresh mint helps, not a retry.
  refused=$(grep -E -m 1 "$TOKEN_REFUSED" "$LOG_FILE" || true)
  if [[ -n $refused ]]; then
    die "the control plane does not accept this worker's join token (deleted or re-minted since it was handed over; kubeadm: ${refused##*] }). Mint a fresh one by replacing the step that mints it, $JOIN_TOKEN_STEP, which runs this join again with the new token: pulumi up --replace <its URN> (\`pulumi stack --show-urns | grep -- '::$JOIN_TOKEN_STEP\$'\` prints it)"
  fi
  die "kubeadm join failed (exit $rc, log in $LOG_FILE); fix the cause, then pulumi up runs this step again, resetting what it left first"
done
[[ -f $KUBELET_CONF ]] || die "kubeadm join exited 0 but $KUBELET_CONF was not written"
log "joined"
printf 'node %s joined\n' "$NODE_NAME"
