#!/usr/bin/env bash
# smoke-test.sh: run nginx (2 replicas) behind a NodePort in namespace kubeadm-libvirt-smoke and fetch it through every node IP.
# Safe to re-run: the namespace is deleted on exit (success or failure); a leftover one is waited for first.
# Inputs (env): SMOKE_IMAGE (nginx image or mirror), NODE_IPS (space-separated IPv4), SMOKE_TIMEOUT_SECONDS,
#               TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

NS=kubeadm-libvirt-smoke

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
check_input SMOKE_IMAGE is_image_ref "expected an image reference such as nginx:1.27 or a mirror of it"
node_ips=()
list_input node_ips NODE_IPS is_ipv4 "an IPv4 address" 1
timeout_scale_input
seconds_input SMOKE_TIMEOUT_SECONDS 1
exit_on_problems
image=$SMOKE_IMAGE
smoke_timeout=$SMOKE_TIMEOUT_SECONDS
curl_timeout=$(scaled 5) # one HTTP request; the loop around it is bounded by DEADLINE
DEADLINE=$((SECONDS + smoke_timeout)) # remaining() counts down to it

need_admin_conf
have curl || die "curl is not installed"
show_state() {
  kc -n "$NS" get deployment,pods,service -o wide >&2 || true
  kc -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
}

# --- a namespace left terminating by an earlier run must be gone before it is re-created -------
phase=$(kc get namespace "$NS" -o jsonpath='{.status.phase}' --request-timeout="$(scaled 15)s" 2>/dev/null || true)
if [[ $phase == Terminating ]]; then
  log "waiting for namespace $NS from an earlier run to finish terminating"
  kc wait --for=delete "namespace/$NS" --timeout="$(remaining)s" >&2 ||
    die "namespace $NS from an earlier run is still terminating after ${smoke_timeout}s"
fi

cleanup() {
  log "deleting namespace $NS"
  kc delete namespace "$NS" --ignore-not-found --wait=false --request-timeout="$(scaled 30)s" >&2 ||
    warn "could not delete namespace $NS"
}
trap cleanup EXIT

# --- deploy ----------------------------------------------------------------------------------
log "deploying $image (2 replicas) with a NodePort service in namespace $NS"
# Rendered by kubectl on the node (--dry-run=client), applied through kc_apply: a busy API server gets them again.
timed_out() { show_state; die "$1 within SMOKE_TIMEOUT_SECONDS=${smoke_timeout}s"; }
namespace=$(kc create namespace "$NS" --dry-run=client -o yaml)
deployment=$(kc -n "$NS" create deployment nginx --image="$image" --replicas=2 --dry-run=client -o yaml)
service=$(kc -n "$NS" create service nodeport nginx --tcp=80:80 --dry-run=client -o yaml)
kc_apply "namespace $NS" - <<<"$namespace" || timed_out "namespace $NS was not created"
kc_apply "deployment nginx" - <<<"$deployment" || timed_out "deployment nginx was not created"
kc_apply "service nginx" - <<<"$service" || timed_out "service nginx was not created"

kc_retrying "waiting for deployment nginx" "" -n "$NS" rollout status deployment/nginx --timeout="${smoke_timeout}s" ||
  timed_out "deployment nginx did not become available"

node_port=$(kc -n "$NS" get service nginx -o jsonpath='{.spec.ports[0].nodePort}')
[[ $node_port =~ ^[0-9]+$ ]] || die "service nginx has no nodePort (got '$node_port')"

# --- fetch through every node (NodePort + kube-proxy + pod network on each) ------------------
for ip in "${node_ips[@]}"; do
  url="http://$ip:$node_port/"
  until body=$(curl -fsS --max-time "$curl_timeout" "$url" 2>&1) && grep -qi nginx <<<"$body"; do
    if ((SECONDS >= DEADLINE)); then
      show_state
      die "no nginx page from $url within SMOKE_TIMEOUT_SECONDS=${smoke_timeout}s (last answer: ${body:0:200})"
    fi
    sleep 2
  done
  log "$url served the nginx page"
done

printf 'smoke test passed\n'
