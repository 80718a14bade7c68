#!/usr/bin/env bash
# node-ready.sh: on the control plane, wait until the Node object NODE_NAME exists and its Ready condition is True.
# Safe to re-run: read-only; the wait is bounded and says what it saw on timeout (not registered, or Ready=... and why).
# Inputs (env): NODE_NAME (the node's name), READY_TIMEOUT_SECONDS, TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

# --- inputs (all checked before anything else; exit 2 when invalid) ---------------------------
check_input NODE_NAME is_node_name "expected a lowercase DNS name such as k8s-w1"
timeout_scale_input
seconds_input READY_TIMEOUT_SECONDS 1
exit_on_problems
DEADLINE=$((SECONDS + READY_TIMEOUT_SECONDS))

need_admin_conf

# node_ready: returns 0 when the node is Ready; otherwise sets seen to what the API server said.
READY_FMT='{.status.conditions[?(@.type=="Ready")].status}{"\n"}{.status.conditions[?(@.type=="Ready")].reason}{"\n"}{.status.conditions[?(@.type=="Ready")].message}'
seen='not checked yet'
node_ready() {
  local out status reason message
  if ! out=$(kc get node "$NODE_NAME" -o jsonpath="$READY_FMT" --request-timeout="$(scaled 10)s" 2>&1); then
    if [[ $out == *NotFound* ]]; then seen='not registered'; else seen="API server: ${out//$'\n'/ }"; fi
    return 1
  fi
  status=${out%%$'\n'*}
  out=${out#*$'\n'}
  reason=${out%%$'\n'*}
  message=${out#*$'\n'}
  [[ $status == True ]] && return 0
  if [[ -z $status ]]; then
    seen='registered, no Ready condition yet'
  else
    seen="Ready=$status${reason:+ ($reason)}${message:+: ${message//$'\n'/ }}"
  fi
  return 1
}

log "waiting (at most ${READY_TIMEOUT_SECONDS}s) for node $NODE_NAME to be Ready"
last_report=$SECONDS
until node_ready; do
  if ((SECONDS >= DEADLINE)); then
    die "node $NODE_NAME is not Ready after ${READY_TIMEOUT_SECONDS}s (READY_TIMEOUT_SECONDS): $seen"
  fi
  if ((SECONDS - last_report >= 30)); then
    log "node $NODE_NAME: $seen; waiting"
    last_report=$SECONDS
  fi
  sleep 5
done

printf 'node %s Ready\n' "$NODE_NAME"
