# step smoke-test
#   SMOKE_IMAGE="docker.io/library/nginx:1.27-alpine"
#   NODE_IPS="192.168.141.130 192.168.141.131 192.168.141.132"
#   SMOKE_TIMEOUT_SECONDS="300"
#!/usr/bin/env bash
# smoke-test.sh: run nginx (2 replicas) behind a NodePort in namespace kubeadm-libvirt-smoke and fetch it through every node IP.
# Safe to re-run: the namespace is deleted on exit (success or failure); a leftover one is waited for first.
# Inputs (env): SMOKE_IMAGE (nginx image or mirror), NODE_IPS (space-separated IPv4), SMOKE_TIMEOUT_SECONDS.
set -euo pipefail
export LC_ALL=C HOME=/root # sudo on bionic keeps the caller's HOME; kubectl would write its cache there

TAG='[smoke-test]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

ADMIN_CONF=/etc/kubernetes/admin.conf
NS=kubeadm-libvirt-smoke

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o
  for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
}
IMAGE_RE='^[A-Za-z0-9][A-Za-z0-9._/:@-]*$'
image=${SMOKE_IMAGE-}
[[ $image =~ $IMAGE_RE ]] || problems+=("SMOKE_IMAGE='$image': expected an image reference such as nginx:1.27 or a mirror of it")
read -r -a node_ips <<<"${NODE_IPS-}"
((${#node_ips[@]} > 0)) || problems+=("NODE_IPS is empty: expected space-separated node IPv4 addresses")
for ip in "${node_ips[@]}"; do
  is_ipv4 "$ip" || problems+=("NODE_IPS: '$ip' is not an IPv4 address")
done
smoke_timeout=${SMOKE_TIMEOUT_SECONDS-}
if [[ ! $smoke_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$smoke_timeout < 1)); then
  problems+=("SMOKE_TIMEOUT_SECONDS='$smoke_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi
smoke_timeout=$((10#$smoke_timeout))
deadline=$((SECONDS + smoke_timeout))

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"
command -v curl >/dev/null 2>&1 || die "curl is not installed"
[[ -f $ADMIN_CONF ]] || die "$ADMIN_CONF does not exist: run kubeadm-init first"
kc() { kubectl --kubeconfig "$ADMIN_CONF" "$@"; }
remaining() { # seconds left before the SMOKE_TIMEOUT_SECONDS deadline (at least 1)
  local left=$((deadline - SECONDS))
  ((left > 0)) || left=1
  echo "$left"
}
show_state() {
  kc -n "$NS" get deployment,pods,service -o wide >&2 || true
  kc -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
}

# --- a namespace left terminating by an earlier run must be gone before it is re-created -------
phase=$(kc get namespace "$NS" -o jsonpath='{.status.phase}' --request-timeout=15s 2>/dev/null || true)
if [[ $phase == Terminating ]]; then
  log "waiting for namespace $NS from an earlier run to finish terminating"
  kc wait --for=delete "namespace/$NS" --timeout="$(remaining)s" >&2 ||
    die "namespace $NS from an earlier run is still terminating after ${smoke_timeout}s"
fi

cleanup() {
  log "deleting namespace $NS"
  kc delete namespace "$NS" --ignore-not-found --wait=false --request-timeout=30s >&2 ||
    log "WARNING: could not delete namespace $NS"
}
trap cleanup EXIT

# --- deploy ----------------------------------------------------------------------------------
log "deploying $image (2 replicas) with a NodePort service in namespace $NS"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >&2
kc -n "$NS" create deployment nginx --image="$image" --replicas=2 --dry-run=client -o yaml | kc apply -f - >&2
kc -n "$NS" create service nodeport nginx --tcp=80:80 --dry-run=client -o yaml | kc apply -f - >&2

if ! kc -n "$NS" rollout status deployment/nginx --timeout="$(remaining)s" >&2; then
  show_state
  die "deployment nginx did not become available within SMOKE_TIMEOUT_SECONDS=${smoke_timeout}s"
fi

node_port=$(kc -n "$NS" get service nginx -o jsonpath='{.spec.ports[0].nodePort}')
[[ $node_port =~ ^[0-9]+$ ]] || die "service nginx has no nodePort (got '$node_port')"

# --- fetch through every node (NodePort + kube-proxy + pod network on each) ------------------
for ip in "${node_ips[@]}"; do
  url="http://$ip:$node_port/"
  until body=$(curl -fsS --max-time 5 "$url" 2>&1) && grep -qi nginx <<<"$body"; do
    if ((SECONDS >= deadline)); then
      show_state
      die "no nginx page from $url within SMOKE_TIMEOUT_SECONDS=${smoke_timeout}s (last answer: ${body:0:200})"
    fi
    sleep 2
  done
  log "$url served the nginx page"
done

printf 'smoke test passed\n'
