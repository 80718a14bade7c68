#!/usr/bin/env bash
# calico.sh: install Calico through the tigera-operator (CRDs, operator, Installation/APIServer) and wait until it is Available.
# Safe to re-run: every apply is declarative (server-side for the large manifests), the wait is bounded.
# Inputs (env): CALICO_OPERATOR_CRDS_URL, CALICO_OPERATOR_URL (manifest URLs), CALICO_OPERATOR_KUSTOMIZATION and CALICO_OPERATOR_IMAGE (the operator image's registry rewrite and its result), CALICO_INSTALLATION (YAML; on slow hosts a policy stretching Calico's probes first),
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
apply_manifest() { # apply_manifest WHAT FILE
  kc_apply "$1" "$2" --server-side --force-conflicts --validate=false --request-timeout="$(scaled 60)s" ||
    timed_out "applying $1 did not finish"
}
download() { # download URL FILE
  log "downloading $1"
  timeout "$(remaining)" curl -fsSL --connect-timeout "$(scaled 15)" --retry 3 --retry-delay 2 "$1" -o "$2" ||
    die "could not download $1"
}

# strip_schema_descriptions IN OUT: the manifest IN (YAML) as a JSON List in OUT, each CRD's openAPIV3Schema without
# its `description`s. Only schema keywords are walked: a property named "description", a default or an enum keep theirs.
# (Python 3.6, the oldest cloud image's: Ubuntu 18.04.)
strip_schema_descriptions() {
  python3 - "$1" "$2" <<'PY'
import json
import sys

import yaml

SUBSCHEMAS = ("items", "additionalProperties", "not")  # a schema (items: or a list of them)
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SUBSCHEMA_MAPS = ("properties", "patternProperties")  # name -> schema


def strip(schema):
    if not isinstance(schema, dict):
        return  # additionalProperties may be a boolean
    schema.pop("description", None)
    for key in SUBSCHEMAS:
        value = schema.get(key)
        for subschema in value if isinstance(value, list) else [value]:
            strip(subschema)
    for key in SUBSCHEMA_LISTS:
        for subschema in schema.get(key) or []:
            strip(subschema)
    for key in SUBSCHEMA_MAPS:
        for subschema in (schema.get(key) or {}).values():
            strip(subschema)


with open(sys.argv[1]) as manifest:
    documents = [d for d in yaml.load_all(manifest, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
for document in documents:
    if document.get("kind") == "CustomResourceDefinition":
        for version in document["spec"].get("versions") or []:
            strip((version.get("schema") or {}).get("openAPIV3Schema"))
with open(sys.argv[2], "w") as stripped:
    json.dump({"apiVersion": "v1", "kind": "List", "items": documents}, stripped, separators=(",", ":"))
PY
}

make_work_dir
download "$CALICO_OPERATOR_CRDS_URL" "$WORK/operator-crds.yaml"
crds_manifest=$WORK/operator-crds.yaml
# On a slow host (timeoutScale above 1) the CRDs go without the descriptions in their schemas: nine tenths of
# their 1.7 MB (the Installation CRD: 618 kB, 135 kB without). The API server decodes, stores and builds OpenAPI from
# all of it on every write, and under TCG each write of the Installation CRD outlasted its timeout (run 9). Only
# `kubectl explain` reads the descriptions. python3 and its yaml module come with cloud-init on every cloud image.
if ((TIMEOUT_SCALE_PERCENT > 100)); then
  if python3 -c 'import yaml' 2>/dev/null; then
    log "leaving the descriptions out of the CRDs' schemas (timeoutScale above 1)"
    strip_schema_descriptions "$crds_manifest" "$WORK/operator-crds.json" ||
      die "could not read the CRDs of $CALICO_OPERATOR_CRDS_URL (is it Calico's operator-crds.yaml?)"
    crds_manifest=$WORK/operator-crds.json
  else
    log "python3 with its yaml module is not installed: applying the CRDs with their descriptions"
  fi
fi
apply_manifest "$CALICO_OPERATOR_CRDS_URL" "$crds_manifest"

# The operator manifest is applied through kustomize's images transformer, which moves the operator image to
# calicoRegistry and keeps the path and tag its Calico release chose (the default maps quay.io to itself); the
# kustomization also leaves out the manifest's copies of the CRDs applied above.
install -d -m 700 "$WORK/operator"
download "$CALICO_OPERATOR_URL" "$WORK/operator/tigera-operator.yaml"
printf '%s\n' "$kustomization" >"$WORK/operator/kustomization.yaml"
kubectl kustomize "$WORK/operator" >"$WORK/tigera-operator.yaml" ||
  die "kubectl kustomize could not build $CALICO_OPERATOR_URL with CALICO_OPERATOR_KUSTOMIZATION"
grep -qE "^[[:space:]-]*image: ${CALICO_OPERATOR_IMAGE//./\\.}:" "$WORK/tigera-operator.yaml" ||
  die "$CALICO_OPERATOR_URL has no container image that became $CALICO_OPERATOR_IMAGE:<tag> (is it Calico's tigera-operator.yaml?)"
apply_manifest "$CALICO_OPERATOR_URL" "$WORK/tigera-operator.yaml"

crds=(crd/installations.operator.tigera.io)
if grep -q '^kind: *APIServer *$' <<<"$installation"; then crds+=(crd/apiservers.operator.tigera.io); fi
# kubectl's own --timeout is the whole step's: kc_retrying's bound, the time remaining, ends it first.
kc_retrying "waiting for ${crds[*]}" "" wait --for=condition=Established --timeout="${CALICO_TIMEOUT_SECONDS}s" "${crds[@]}" ||
  timed_out "the operator CRDs (${crds[*]}) did not become Established"

# Right after the CRDs are created, discovery may not list the new kinds yet: kc_apply sends it again. kubectl applies
# the documents in order: a probe policy comes before the Installation, so it is in place before any Calico pod exists.
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
