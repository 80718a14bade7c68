# step calico
#   CALICO_OPERATOR_CRDS_URL="https://raw.githubusercontent.com/projectcalico/calico/v3.31.6/manifests/operator-crds.yaml"
#   CALICO_OPERATOR_URL="https://raw.githubusercontent.com/projectcalico/calico/v3.31.6/manifests/tigera-operator.yaml"
#   CALICO_INSTALLATION="apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n  calicoNetwork:\n    ipPools:\n    - name: default-ipv4-ippool\n      cidr: 10.244.0.0/16\n      encapsulation: VXLANCrossSubnet\n      natOutgoing: Enabled\n      nodeSelector: all()\n    nodeAddressAutodetectionV4:\n      cidrs:\n      - 192.168.141.0/24\n---\napiVersion: operator.tigera.io/v1\nkind: APIServer\nmetadata:\n  name: default\nspec: {}\n"
#   CALICO_TIMEOUT_SECONDS="900"
#!/usr/bin/env bash
# calico.sh: install Calico through the tigera-operator (CRDs, operator, Installation/APIServer) and wait until it is Available.
# Safe to re-run: every apply is declarative (server-side for the large manifests), the wait is bounded.
# Inputs (env): CALICO_OPERATOR_CRDS_URL, CALICO_OPERATOR_URL (manifest URLs), CALICO_INSTALLATION (YAML),
#               CALICO_TIMEOUT_SECONDS (bounds the whole step).
set -euo pipefail
export LC_ALL=C HOME=/root # sudo on bionic keeps the caller's HOME; kubectl would write its cache there

TAG='[calico]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

ADMIN_CONF=/etc/kubernetes/admin.conf

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
for name in CALICO_OPERATOR_CRDS_URL CALICO_OPERATOR_URL; do
  value=${!name-}
  if [[ ! $value =~ ^https?://[^[:space:]]+$ ]]; then
    problems+=("$name='$value': expected an http(s) URL of a manifest")
  fi
done
installation=${CALICO_INSTALLATION-}
if ! grep -q '^kind: *Installation *$' <<<"$installation"; then
  problems+=("CALICO_INSTALLATION: expected YAML with a 'kind: Installation' document (operator.tigera.io/v1)")
fi
calico_timeout=${CALICO_TIMEOUT_SECONDS-}
if [[ ! $calico_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$calico_timeout < 1)); then
  problems+=("CALICO_TIMEOUT_SECONDS='$calico_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi
calico_timeout=$((10#$calico_timeout))
crds_url=$CALICO_OPERATOR_CRDS_URL
operator_url=$CALICO_OPERATOR_URL
deadline=$((SECONDS + calico_timeout))

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"
[[ -f $ADMIN_CONF ]] || die "$ADMIN_CONF does not exist: run kubeadm-init first"

kc() { kubectl --kubeconfig "$ADMIN_CONF" "$@"; }
remaining() { # seconds left before the CALICO_TIMEOUT_SECONDS deadline (at least 1)
  local left=$((deadline - SECONDS))
  ((left > 0)) || left=1
  echo "$left"
}
report_not_ready() {
  log "current state:"
  kc get tigerastatus >&2 || true
  kc -n tigera-operator get pods -o wide >&2 || true
  kc -n calico-system get pods -o wide >&2 || true
}
timed_out() { report_not_ready; die "$1 within CALICO_TIMEOUT_SECONDS=${calico_timeout}s"; }

apply_manifest_url() {
  local rc=0
  log "applying $1"
  timeout -k 10 "$(remaining)" kubectl --kubeconfig "$ADMIN_CONF" apply --server-side --force-conflicts -f "$1" >&2 || rc=$?
  if ((rc == 124 || rc == 137)); then timed_out "applying $1 did not finish"; fi
  ((rc == 0)) || die "kubectl apply of $1 failed (exit $rc)"
}

apply_manifest_url "$crds_url"
apply_manifest_url "$operator_url"

crds=(crd/installations.operator.tigera.io)
if grep -q '^kind: *APIServer *$' <<<"$installation"; then crds+=(crd/apiservers.operator.tigera.io); fi
kc wait --for=condition=Established --timeout="$(remaining)s" "${crds[@]}" >&2 ||
  timed_out "the operator CRDs (${crds[*]}) did not become Established"

# Retried: right after the CRDs are created, discovery may not list the new kinds yet.
log "applying the Installation"
while :; do
  { err=$(printf '%s\n' "$installation" | kc apply -f - 2>&1 1>&3); } 3>&2 && break
  printf '%s\n' "$err" >&2
  [[ $err == *"no matches for kind"* || $err == *"ensure CRDs are installed"* ]] ||
    die "kubectl apply of CALICO_INSTALLATION failed (see above)"
  ((SECONDS < deadline)) || timed_out "the Installation kinds were not served"
  log "the API server does not serve the new kinds yet; retrying"
  sleep 5
done

# The operator creates tigerastatus/calico only once it has picked up the Installation.
log "waiting for tigerastatus/calico to appear"
until kc get tigerastatus calico -o name --request-timeout=10s >/dev/null 2>&1; do
  ((SECONDS < deadline)) || timed_out "tigerastatus/calico was not created"
  sleep 5
done
log "waiting for all tigerastatus resources to become Available"
kc wait --for=condition=Available --timeout="$(remaining)s" tigerastatus --all >&2 ||
  timed_out "Calico did not become Available"

printf 'calico available: %s\n' "$(kc get tigerastatus -o jsonpath='{.items[*].metadata.name}')"
