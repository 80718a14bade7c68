echo kubernetes-slave1 joined

# on delete
# step drain-node
#   NODE_NAME="kubernetes-slave1"
#   DRAIN_TIMEOUT_SECONDS="120"
#!/usr/bin/env bash
# drain-node.sh: on the control plane, drain a worker and delete its Node object (the delete hook of a worker's membership).
# Safe to re-run: exits 0 when the node object does not exist (or the cluster is gone); a drain timeout only warns.
# Inputs (env): NODE_NAME (the worker's node name), DRAIN_TIMEOUT_SECONDS.
set -euo pipefail
export LC_ALL=C HOME=/root # sudo on bionic keeps the caller's HOME; kubectl would write its cache there

TAG='[drain-node]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
warn() { printf '%s WARNING: %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

ADMIN_CONF=/etc/kubernetes/admin.conf
API_WAIT_SECONDS=60

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
NODE_NAME_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
node_name=${NODE_NAME-}
if [[ ! $node_name =~ $NODE_NAME_RE ]] || ((${#node_name} > 253)); then
  problems+=("NODE_NAME='$node_name': expected a lowercase DNS name such as k8s-w1")
fi
drain_timeout=${DRAIN_TIMEOUT_SECONDS-}
if [[ ! $drain_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$drain_timeout < 1)); then
  problems+=("DRAIN_TIMEOUT_SECONDS='$drain_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi
drain_timeout=$((10#$drain_timeout))

if [[ ! -f $ADMIN_CONF ]] || ! command -v kubectl >/dev/null 2>&1; then
  warn "no $ADMIN_CONF or kubectl on this node: the cluster is gone; nothing to drain"
  printf 'node %s: no cluster, nothing removed\n' "$node_name"
  exit 0
fi
kc() { kubectl --kubeconfig "$ADMIN_CONF" "$@"; }

# --- does the node exist? (wait a little for the API server, e.g. after a reboot) --------------
probe_deadline=$((SECONDS + API_WAIT_SECONDS))
while :; do
  if err=$(kc get node "$node_name" -o name --request-timeout=10s 2>&1 >/dev/null); then break; fi
  if [[ $err == *NotFound* ]]; then
    log "node $node_name does not exist; nothing to do"
    printf 'node %s: not found, nothing removed\n' "$node_name"
    exit 0
  fi
  if ((SECONDS >= probe_deadline)); then
    # A delete hook must not block a destroy of a broken cluster: warn and succeed.
    warn "the API server did not answer within ${API_WAIT_SECONDS}s ($err); node $node_name was NOT drained or deleted"
    printf 'node %s: API server unreachable, not removed\n' "$node_name"
    exit 0
  fi
  sleep 5
done

# --- drain, then delete ----------------------------------------------------------------------
log "draining $node_name (at most ${drain_timeout}s)"
if ! timeout -k 10 "$((drain_timeout + 30))" kubectl --kubeconfig "$ADMIN_CONF" drain "$node_name" \
  --ignore-daemonsets --delete-emptydir-data --force --timeout="${drain_timeout}s" >&2; then
  warn "draining $node_name did not complete within ${drain_timeout}s; deleting the node anyway"
fi
log "deleting node $node_name"
kc delete node "$node_name" --ignore-not-found --request-timeout=60s >&2 || die "could not delete node $node_name"
printf 'node %s: drained and deleted\n' "$node_name"
