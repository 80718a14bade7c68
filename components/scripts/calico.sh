#!/usr/bin/env bash
# calico.sh: install Calico through the tigera-operator (CRDs, operator, Installation/APIServer) and wait until it is Available.
# Safe to re-run: every apply is declarative (server-side for the large manifests), the wait is bounded.
# Inputs (env): CALICO_OPERATOR_CRDS_URL, CALICO_OPERATOR_URL (manifest URLs), CALICO_OPERATOR_KUSTOMIZATION and CALICO_OPERATOR_IMAGE (the operator image's registry rewrite and its result), CALICO_INSTALLATION (YAML),
#               CALICO_TIMEOUT_SECONDS (bounds the whole step), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
check_input CALICO_OPERATOR_CRDS_URL is_http_url "expected an http(s) URL of a manifest"
check_input CALICO_OPERATOR_URL is_http_url "expected an http(s) URL of a manifest"
kustomization=${CALICO_OPERATOR_KUSTOMIZATION-}
if ! grep -q '^kind: *Kustomization *$' <<<"$kustomization" || ! grep -q '^- tigera-operator.yaml$' <<<"$kustomization"; then
  problem "CALICO_OPERATOR_KUSTOMIZATION: expected a Kustomization (kustomize.config.k8s.io/v1beta1) of tigera-operator.yaml"
fi
check_input CALICO_OPERATOR_IMAGE is_image_ref "expected the operator image without its tag, e.g. quay.io/tigera/operator"
installation=${CALICO_INSTALLATION-}
if ! grep -q '^kind: *Installation *$' <<<"$installation"; then
  problem "CALICO_INSTALLATION: expected YAML with a 'kind: Installation' document (operator.tigera.io/v1)"
fi
seconds_input CALICO_TIMEOUT_SECONDS 1
exit_on_problems
DEADLINE=$((SECONDS + CALICO_TIMEOUT_SECONDS)) # remaining() counts down to it

need_admin_conf
report_not_ready() {
  log "current state:"
  kc get tigerastatus >&2 || true
  kc -n tigera-operator get pods -o wide >&2 || true
  kc -n calico-system get pods -o wide >&2 || true
}
timed_out() { report_not_ready; die "$1 within CALICO_TIMEOUT_SECONDS=${CALICO_TIMEOUT_SECONDS}s"; }

# Server-side: the CRDs are too large for the last-applied annotation. On a busy control plane the API server can
# time out on them (seen under TCG when the step re-ran): kc_apply sends them again. --validate=false: these are
# Calico's released manifests; validating them made kubectl fetch the OpenAPI document of the whole cluster, Calico's
# 600 kB Installation schema included, on every attempt, which under TCG timed out (run 8: 38 minutes of attempts
# that all failed there, each making the API server build the document again). --request-timeout: without it the
# API server gives each write 34 s; writing that 600 kB CRD took longer under TCG, so every attempt ended in
# "Error from server (Timeout)" and was sent again (run 9: seven attempts in 27 minutes). The API server's own
# --request-timeout (60 s, stretched by timeoutScale) caps it.
apply_manifest_url() {
  kc_apply "$1" "$1" --server-side --force-conflicts --validate=false --request-timeout="$(scaled 60)s" ||
    timed_out "applying $1 did not finish"
}

apply_manifest_url "$CALICO_OPERATOR_CRDS_URL"

# The operator manifest is applied through kustomize's images transformer, which moves the operator image to
# calicoRegistry and keeps the path and tag its Calico release chose (the default maps quay.io to itself); the
# kustomization also leaves out the manifest's copies of the CRDs applied above.
make_work_dir
install -d -m 700 "$WORK/operator"
log "downloading $CALICO_OPERATOR_URL"
timeout "$(remaining)" curl -fsSL --connect-timeout "$(scaled 15)" --retry 3 --retry-delay 2 "$CALICO_OPERATOR_URL" \
  -o "$WORK/operator/tigera-operator.yaml" || die "could not download $CALICO_OPERATOR_URL"
printf '%s\n' "$kustomization" >"$WORK/operator/kustomization.yaml"
kubectl kustomize "$WORK/operator" >"$WORK/tigera-operator.yaml" ||
  die "kubectl kustomize could not build $CALICO_OPERATOR_URL with CALICO_OPERATOR_KUSTOMIZATION"
grep -qE "^[[:space:]-]*image: ${CALICO_OPERATOR_IMAGE//./\\.}:" "$WORK/tigera-operator.yaml" ||
  die "$CALICO_OPERATOR_URL has no container image that became $CALICO_OPERATOR_IMAGE:<tag> (is it Calico's tigera-operator.yaml?)"
apply_manifest_url "$WORK/tigera-operator.yaml"

crds=(crd/installations.operator.tigera.io)
if grep -q '^kind: *APIServer *$' <<<"$installation"; then crds+=(crd/apiservers.operator.tigera.io); fi
# kubectl's own --timeout is the whole step's: kc_retrying's bound, the time remaining, ends it first.
kc_retrying "waiting for ${crds[*]}" "" wait --for=condition=Established --timeout="${CALICO_TIMEOUT_SECONDS}s" "${crds[@]}" ||
  timed_out "the operator CRDs (${crds[*]}) did not become Established"

# Right after the CRDs are created, discovery may not list the new kinds yet: kc_apply sends it again.
kc_apply "CALICO_INSTALLATION" - <<<"$installation" || timed_out "the Installation's kinds were not served"

# The operator creates tigerastatus/calico only once it has picked up the Installation.
log "waiting for tigerastatus/calico to appear"
until kc get tigerastatus calico -o name --request-timeout="$(scaled 10)s" >/dev/null 2>&1; do
  ((SECONDS < DEADLINE)) || timed_out "tigerastatus/calico was not created"
  sleep 5
done
log "waiting for all tigerastatus resources to become Available"
kc_retrying "waiting for tigerastatus" "" wait --for=condition=Available --timeout="${CALICO_TIMEOUT_SECONDS}s" tigerastatus --all ||
  timed_out "Calico did not become Available"

printf 'calico available: %s\n' "$(kc get tigerastatus -o jsonpath='{.items[*].metadata.name}')"
