#!/usr/bin/env bash
# cluster-ready.sh: wait until every expected node is Ready and every kube-system / calico-system pod is Running and ready.
# Safe to re-run: read-only; the wait is bounded and prints exactly what is not ready on timeout.
# Inputs (env): EXPECTED_NODES (space-separated node names), READY_TIMEOUT_SECONDS, TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

NAMESPACES=(kube-system calico-system)

# --- inputs (all checked before anything else; exit 2 when invalid) ---------------------------
expected_nodes=()
list_input expected_nodes EXPECTED_NODES is_node_name "a valid node name (lowercase DNS name)" 1
timeout_scale_input
seconds_input READY_TIMEOUT_SECONDS 1
exit_on_problems
DEADLINE=$((SECONDS + READY_TIMEOUT_SECONDS))
request_timeout=$(scaled 15)s

need_admin_conf

# check_cluster: fills not_ready with one line per problem; returns 0 when there is none.
NODE_FMT='{range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}'
POD_FMT='{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.containerStatuses[*].ready}{"\n"}{end}'
check_cluster() {
  not_ready=()
  checked_namespaces=()
  local nodes pods n status ns name phase readies
  if ! nodes=$(kc --request-timeout="$request_timeout" get nodes -o jsonpath="$NODE_FMT" 2>&1); then
    not_ready+=("API server: ${nodes//$'\n'/ }")
    return 1
  fi
  for n in "${expected_nodes[@]}"; do
    status=$(awk -F'\t' -v n="$n" '$1 == n { print $2 }' <<<"$nodes")
    [[ $status == True ]] || not_ready+=("node $n: ${status:+Ready=}${status:-not registered}")
  done
  for ns in "${NAMESPACES[@]}"; do
    if [[ $ns != kube-system ]] && ! kc --request-timeout="$request_timeout" get namespace "$ns" -o name >/dev/null 2>&1; then continue; fi
    checked_namespaces+=("$ns")
    if ! pods=$(kc --request-timeout="$request_timeout" -n "$ns" get pods -o jsonpath="$POD_FMT" 2>&1); then
      not_ready+=("pods in $ns: ${pods//$'\n'/ }")
      continue
    fi
    while IFS=$'\t' read -r name phase readies; do
      [[ -n $name ]] || continue
      [[ $phase == Succeeded ]] && continue
      if [[ $phase == Running && -n $readies && $readies != *false* ]]; then continue; fi
      not_ready+=("pod $ns/$name: phase=${phase:-unknown}, containers ready=[${readies:-none}]")
    done <<<"$pods"
  done
  ((${#not_ready[@]} == 0))
}

log "waiting (at most ${READY_TIMEOUT_SECONDS}s) for nodes ${expected_nodes[*]} and the system pods"
last_report=$SECONDS
until check_cluster; do
  if ((SECONDS >= DEADLINE)); then
    printf '%s not ready after %ss (READY_TIMEOUT_SECONDS):\n' "$TAG" "$READY_TIMEOUT_SECONDS" >&2
    printf '  %s\n' "${not_ready[@]}" >&2
    exit 1
  fi
  if ((SECONDS - last_report >= 30)); then
    log "${#not_ready[@]} not ready yet, e.g. ${not_ready[0]}"
    last_report=$SECONDS
  fi
  sleep 5
done

printf 'cluster ready: %d nodes Ready (%s); all pods ready in %s\n' \
  "${#expected_nodes[@]}" "${expected_nodes[*]}" "${checked_namespaces[*]}"
