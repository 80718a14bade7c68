# step cluster-ready
#   EXPECTED_NODES="kubernetes-master kubernetes-slave1 kubernetes-slave2"
#   READY_TIMEOUT_SECONDS="900"
#!/usr/bin/env bash
# cluster-ready.sh: wait until every expected node is Ready and every kube-system / calico-system pod is Running and ready.
# Safe to re-run: read-only; the wait is bounded and prints exactly what is not ready on timeout.
# Inputs (env): EXPECTED_NODES (space-separated node names), READY_TIMEOUT_SECONDS.
set -euo pipefail
export LC_ALL=C HOME=/root # sudo on bionic keeps the caller's HOME; kubectl would write its cache there

TAG='[cluster-ready]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

ADMIN_CONF=/etc/kubernetes/admin.conf
NAMESPACES=(kube-system calico-system)

# --- inputs (all checked before anything else; exit 2 when invalid) ---------------------------
problems=()
NODE_NAME_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
read -r -a expected_nodes <<<"${EXPECTED_NODES-}"
if ((${#expected_nodes[@]} == 0)); then
  problems+=("EXPECTED_NODES is empty: expected space-separated node names such as 'k8s-cp1 k8s-w1 k8s-w2'")
fi
for n in "${expected_nodes[@]}"; do
  [[ $n =~ $NODE_NAME_RE ]] || problems+=("EXPECTED_NODES: '$n' is not a valid node name (lowercase DNS name)")
done
ready_timeout=${READY_TIMEOUT_SECONDS-}
if [[ ! $ready_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$ready_timeout < 1)); then
  problems+=("READY_TIMEOUT_SECONDS='$ready_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi
ready_timeout=$((10#$ready_timeout))
deadline=$((SECONDS + ready_timeout))

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"
[[ -f $ADMIN_CONF ]] || die "$ADMIN_CONF does not exist: run kubeadm-init first"
kc() { kubectl --kubeconfig "$ADMIN_CONF" --request-timeout=15s "$@"; }

# check_cluster: fills not_ready with one line per problem; returns 0 when there is none.
NODE_FMT='{range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}'
POD_FMT='{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.containerStatuses[*].ready}{"\n"}{end}'
check_cluster() {
  not_ready=()
  checked_namespaces=()
  local nodes pods n status ns name phase readies
  if ! nodes=$(kc get nodes -o jsonpath="$NODE_FMT" 2>&1); then
    not_ready+=("API server: ${nodes//$'\n'/ }")
    return 1
  fi
  for n in "${expected_nodes[@]}"; do
    status=$(awk -F'\t' -v n="$n" '$1 == n { print $2 }' <<<"$nodes")
    [[ $status == True ]] || not_ready+=("node $n: ${status:+Ready=}${status:-not registered}")
  done
  for ns in "${NAMESPACES[@]}"; do
    if [[ $ns != kube-system ]] && ! kc get namespace "$ns" -o name >/dev/null 2>&1; then continue; fi
    checked_namespaces+=("$ns")
    if ! pods=$(kc -n "$ns" get pods -o jsonpath="$POD_FMT" 2>&1); then
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

log "waiting (at most ${ready_timeout}s) for nodes ${expected_nodes[*]} and the system pods"
last_report=$SECONDS
until check_cluster; do
  if ((SECONDS >= deadline)); then
    printf '%s not ready after %ss (READY_TIMEOUT_SECONDS):\n' "$TAG" "$ready_timeout" >&2
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
