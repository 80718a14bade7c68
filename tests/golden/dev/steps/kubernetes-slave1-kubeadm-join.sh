# step kubeadm-join
#   NODE_NAME="kubernetes-slave1"
#   JOIN_TIMEOUT_SECONDS="600"
#!/usr/bin/env bash
# kubeadm-join.sh: join this worker to the cluster with the join command read from STDIN (never echoed or logged unredacted).
# Safe to re-run: exits 0 when /etc/kubernetes/kubelet.conf exists; refuses (no auto-reset) after a half-done join.
# Inputs: env NODE_NAME (node name), JOIN_TIMEOUT_SECONDS; STDIN (secret, one line):
#   kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
set -euo pipefail
export LC_ALL=C

TAG='[kubeadm-join]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }
invalid() { printf '%s invalid input: %s\n' "$TAG" "$1" >&2; }

KUBELET_CONF=/etc/kubernetes/kubelet.conf
LOG_DIR=/var/log/kubeadm-libvirt
LOG_FILE=$LOG_DIR/kubeadm-join.log

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
NODE_NAME_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
node_name=${NODE_NAME-}
if [[ ! $node_name =~ $NODE_NAME_RE ]] || ((${#node_name} > 253)); then
  problems+=("NODE_NAME='$node_name': expected a lowercase DNS name such as k8s-w1")
fi
join_timeout=${JOIN_TIMEOUT_SECONDS-}
if [[ ! $join_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$join_timeout < 1)); then
  problems+=("JOIN_TIMEOUT_SECONDS='$join_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do invalid "$p"; done
  exit 2
fi

join_line=''
IFS= read -r -t 60 join_line || true # the secret (bounded read): only ever put into kubeadm's argv, never printed

if [[ -f $KUBELET_CONF ]]; then
  log "$KUBELET_CONF exists: this node has already joined; nothing to do"
  printf 'node %s joined\n' "$node_name"
  exit 0
fi

join_line=${join_line%$'\r'}
if [[ $join_line != 'kubeadm join '* ]]; then
  invalid "the join command on STDIN does not start with 'kubeadm join ' (it is not shown: it holds a token)"
  exit 2
fi
if [[ $join_line != *--discovery-token-ca-cert-hash* ]]; then
  invalid "the join command on STDIN has no --discovery-token-ca-cert-hash (refusing to join without CA pinning)"
  exit 2
fi
if [[ ! $join_line =~ ^[A-Za-z0-9\ .:/=_-]+$ ]]; then
  invalid "the join command on STDIN contains characters other than letters, digits, spaces and .:/=_-"
  exit 2
fi
# Split into words without a here-string (bash < 5.1 backs those with a temp file) and without eval.
read -r -a join_args < <(printf '%s\n' "$join_line")

# --- half-done join? -------------------------------------------------------------------------
for f in /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/pki/ca.crt; do
  if [[ -e $f ]]; then
    die "$f exists but $KUBELET_CONF does not: an earlier 'kubeadm join' stopped half-way; run 'sudo kubeadm reset -f' on this node, then re-run this step"
  fi
done
command -v kubeadm >/dev/null 2>&1 || die "kubeadm is not installed (run install-kube-packages first)"

# --- join ------------------------------------------------------------------------------------
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<redacted-token>/g; s/(--token[= ])[^ ]+/\1<redacted>/g'; }
[[ -d $LOG_DIR ]] || install -d -m 700 "$LOG_DIR"
log "running kubeadm join as node $node_name (at most ${join_timeout}s; log: $LOG_FILE)"
rc=0
(umask 077 && timeout -k 30 "$((10#$join_timeout))" "${join_args[@]}" --node-name "$node_name" 2>&1 | redact >"$LOG_FILE") || rc=$?
if ((rc != 0)); then
  tail -n 60 "$LOG_FILE" >&2
  if ((rc == 124 || rc == 137)); then
    die "kubeadm join did not finish within JOIN_TIMEOUT_SECONDS=${join_timeout}s; run 'sudo kubeadm reset -f' on this node before retrying"
  fi
  die "kubeadm join failed (exit $rc, log in $LOG_FILE); if it got past preflight, run 'sudo kubeadm reset -f' on this node before retrying"
fi
[[ -f $KUBELET_CONF ]] || die "kubeadm join exited 0 but $KUBELET_CONF was not written"
log "joined"
printf 'node %s joined\n' "$node_name"

# on delete
# step reset-node
#   KUBE_USER="ubuntu"
#!/usr/bin/env bash
# reset-node.sh: undo kubeadm join on this node: kubeadm reset, CNI config, Kubernetes/Calico iptables chains, IPVS, kubeconfigs.
# Safe to re-run: every step is skipped when there is nothing left to clean; exits 0 on a never-joined node.
# Inputs (env): KUBE_USER (optional: whose ~/.kube/config to remove), RESET_TIMEOUT_SECONDS (optional, default 300).
set -euo pipefail
export LC_ALL=C HOME=/root # sudo on bionic keeps the caller's HOME

TAG='[reset-node]'
log() { printf '%s %s\n' "$TAG" "$*" >&2; }
warn() { printf '%s WARNING: %s\n' "$TAG" "$*" >&2; }

LOG_DIR=/var/log/kubeadm-libvirt
LOG_FILE=$LOG_DIR/kubeadm-reset.log

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
problems=()
kube_user=${KUBE_USER-}
if [[ -n $kube_user && ! $kube_user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
  problems+=("KUBE_USER='$kube_user': expected a login name such as ubuntu (or empty)")
fi
reset_timeout=${RESET_TIMEOUT_SECONDS:-300}
if [[ ! $reset_timeout =~ ^[0-9]{1,6}$ ]] || ((10#$reset_timeout < 1)); then
  problems+=("RESET_TIMEOUT_SECONDS='$reset_timeout': expected a whole number of seconds >= 1")
fi
if ((${#problems[@]} > 0)); then
  for p in "${problems[@]}"; do printf '%s invalid input: %s\n' "$TAG" "$p" >&2; done
  exit 2
fi

did=()

# --- kubeadm reset ---------------------------------------------------------------------------
state=''
for f in /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/admin.conf \
  /etc/kubernetes/pki/ca.crt /var/lib/kubelet/config.yaml; do
  if [[ -e $f ]]; then state=$f; break; fi
done
if [[ -z $state ]]; then
  log "no kubeadm state on this node; skipping kubeadm reset"
elif ! command -v kubeadm >/dev/null 2>&1; then
  warn "$state exists but kubeadm is not installed; skipping kubeadm reset"
else
  log "running kubeadm reset -f (log: $LOG_FILE)"
  [[ -d $LOG_DIR ]] || install -d -m 700 "$LOG_DIR"
  rc=0
  timeout -k 10 "$((10#$reset_timeout))" kubeadm reset -f >"$LOG_FILE" 2>&1 || rc=$?
  if ((rc == 0)); then
    did+=("kubeadm reset")
  else
    tail -n 30 "$LOG_FILE" >&2
    warn "kubeadm reset failed (exit $rc); continuing with the rest of the cleanup"
  fi
fi

# --- CNI configuration -----------------------------------------------------------------------
if [[ -e /etc/cni/net.d ]]; then
  rm -rf /etc/cni/net.d
  did+=("removed /etc/cni/net.d")
fi

# --- iptables: only when kube-proxy or Calico chains are present -----------------------------
for ipt in iptables ip6tables; do
  if ! command -v "$ipt" >/dev/null 2>&1 || ! command -v "$ipt-save" >/dev/null 2>&1; then continue; fi
  # (captured before grep -q: with pipefail, a writer killed by SIGPIPE would fail the test)
  rules=$("$ipt-save" 2>/dev/null || true)
  if grep -qE '^:(KUBE-|cali-)' <<<"$rules"; then
    log "flushing $ipt (filter, nat, mangle, raw)"
    # Accept first: flushing rules under a DROP input policy would cut this SSH session.
    "$ipt" -P INPUT ACCEPT || warn "$ipt -P INPUT ACCEPT failed"
    "$ipt" -P OUTPUT ACCEPT || warn "$ipt -P OUTPUT ACCEPT failed"
    for table in filter nat mangle raw; do
      { "$ipt" -t "$table" -F && "$ipt" -t "$table" -X; } 2>/dev/null || warn "could not flush $ipt table $table"
    done
    did+=("flushed $ipt")
  fi
done

# --- IPVS ------------------------------------------------------------------------------------
ipvs_table=''
if command -v ipvsadm >/dev/null 2>&1; then ipvs_table=$(ipvsadm -Ln 2>/dev/null || true); fi
if grep -qE '^(TCP|UDP|SCTP)' <<<"$ipvs_table"; then
  ipvsadm -C || warn "ipvsadm -C failed"
  did+=("cleared IPVS")
fi

# --- kubeconfigs -----------------------------------------------------------------------------
if [[ -e /root/.kube ]]; then
  rm -rf /root/.kube
  did+=("removed /root/.kube")
fi
if [[ -n $kube_user ]]; then
  if home=$(getent passwd "$kube_user" | cut -d: -f6) && [[ -n $home ]]; then
    if [[ -e $home/.kube/config ]]; then
      rm -f "$home/.kube/config"
      did+=("removed $home/.kube/config")
    fi
  else
    log "user $kube_user does not exist; no user kubeconfig to remove"
  fi
fi

if ((${#did[@]} > 0)); then
  summary=$(printf '%s, ' "${did[@]}")
  printf 'node reset: %s\n' "${summary%, }"
else
  printf 'node reset: nothing to clean\n'
fi
