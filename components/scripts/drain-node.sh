#!/usr/bin/env bash
# drain-node.sh: on the control plane, drain a worker and delete its Node object (the delete hook of a worker's membership).
# Safe to re-run: exits 0 when the node object does not exist (or the cluster is gone, or another VM joined under its name).
# Inputs (env): NODE_NAME, NODE_SYSTEM_UUID (the libvirt UUID of this membership's VM), DRAIN_TIMEOUT_SECONDS,
#               API_WAIT_TIMEOUT_SECONDS (optional, default 60), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
check_input NODE_NAME is_node_name "expected a lowercase DNS name such as k8s-w1"
check_input NODE_SYSTEM_UUID is_uuid "expected the worker VM's libvirt UUID such as 0df39e25-5d31-4511-83b1-5c06e8382080"
seconds_input DRAIN_TIMEOUT_SECONDS 1
seconds_input API_WAIT_TIMEOUT_SECONDS 1 "$(scaled 60)"
exit_on_problems
drain_timeout=$DRAIN_TIMEOUT_SECONDS
request_timeout=$(scaled 10)s

if [[ ! -f $ADMIN_CONF ]] || ! have kubectl; then
  warn "no $ADMIN_CONF or kubectl on this node: the cluster is gone; nothing to drain"
  printf 'node %s: no cluster, nothing removed\n' "$NODE_NAME"
  exit 0
fi

# --- does the node exist? (wait a little for the API server, e.g. after a reboot) --------------
probe_deadline=$((SECONDS + API_WAIT_TIMEOUT_SECONDS))
while :; do
  if err=$(kc get node "$NODE_NAME" -o name --request-timeout="$request_timeout" 2>&1 >/dev/null); then break; fi
  if [[ $err == *NotFound* ]]; then
    log "node $NODE_NAME does not exist; nothing to do"
    printf 'node %s: not found, nothing removed\n' "$NODE_NAME"
    exit 0
  fi
  if ((SECONDS >= probe_deadline)); then
    # A delete hook must not block a destroy of a broken cluster: warn and succeed.
    warn "the API server did not answer within ${API_WAIT_TIMEOUT_SECONDS}s (API_WAIT_TIMEOUT_SECONDS; $err); node $NODE_NAME was NOT drained or deleted"
    printf 'node %s: API server unreachable, not removed\n' "$NODE_NAME"
    exit 0
  fi
  sleep 5
done

# --- whose Node is it, and does it still report? --------------------------------------------
# A VM's kubelet reports its libvirt UUID as the Node's system UUID. When the worker's VM was replaced (its domain
# lost and created again), the new VM joins under the same name before this old membership's hook runs: its Node,
# with another UUID, is left alone.
node_state=$(kc get node "$NODE_NAME" --request-timeout="$request_timeout" \
  -o 'jsonpath={.status.nodeInfo.systemUUID}|{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || node_state='|'
IFS='|' read -r system_uuid ready <<<"$node_state"
if [[ -n $system_uuid && ${system_uuid,,} != "${NODE_SYSTEM_UUID,,}" ]]; then
  log "node $NODE_NAME now runs on another VM (system UUID $system_uuid, not this membership's $NODE_SYSTEM_UUID): it joined again; leaving it in the cluster"
  printf 'node %s: another VM joined under this name, not removed\n' "$NODE_NAME"
  exit 0
fi

# --- drain, then delete ----------------------------------------------------------------------
drain_options=(--ignore-daemonsets --delete-emptydir-data --force --timeout="${drain_timeout}s")
if [[ $ready == Unknown ]]; then
  # The node stopped reporting (its VM gone or off): no kubelet will confirm its pods' deletion, so waiting for them
  # would only run out the drain timeout. Evict them (their controllers start replacements) and go on.
  log "node $NODE_NAME is unreachable (Ready=Unknown): evicting its pods without waiting for them to end"
  drain_options+=(--skip-wait-for-delete-timeout=1)
fi
log "draining $NODE_NAME (at most ${drain_timeout}s)"
# kubectl's own --timeout ends the drain; the outer bound only catches a kubectl that hangs past it.
if ! timeout -k "$(scaled 10)" "$((drain_timeout + $(scaled 30)))" kubectl --kubeconfig "$ADMIN_CONF" drain "$NODE_NAME" \
  "${drain_options[@]}" >&2; then
  warn "draining $NODE_NAME did not complete within ${drain_timeout}s; deleting the node anyway"
fi
log "deleting node $NODE_NAME"
kc delete node "$NODE_NAME" --ignore-not-found --request-timeout="$(scaled 60)s" >&2 || die "could not delete node $NODE_NAME"
printf 'node %s: drained and deleted\n' "$NODE_NAME"
