#!/usr/bin/env bash
# kubeadm-init.sh: initialise the control plane with kubeadm from a rendered config, then give KUBE_USER a kubeconfig.
# Safe to re-run: skips init when the cluster already answers; refuses (no auto-reset) when a half-done init is found.
# Inputs (env): KUBEADM_CONFIG (multi-document kubeadm YAML), KUBE_USER (gets ~/.kube/config), INIT_TIMEOUT_SECONDS (image pull +
#   kubeadm init), API_WAIT_TIMEOUT_SECONDS (optional, 120: an initialised API server answering), TIMEOUT_SCALE_PERCENT (optional), KUBEADM_PATCHES (optional: kubeadm patch files of the static pods, each after a '# kubeadm patch: FILE' line).
set -euo pipefail

CONFIG_DIR=/etc/kubernetes/kubeadm-libvirt
CONFIG_FILE=$CONFIG_DIR/kubeadm.yaml
PATCHES_DIR=$CONFIG_DIR/patches # InitConfiguration patches.directory, when KUBEADM_PATCHES has any
LOG_FILE=$LOG_DIR/kubeadm-init.log
RESET_HINT="inspect the node, then run 'sudo kubeadm reset -f' on it (this wipes the control plane state) and re-run this step"

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
config=${KUBEADM_CONFIG-}
if [[ -z ${config//[[:space:]]/} ]]; then
  problem "KUBEADM_CONFIG is empty: expected the kubeadm YAML (InitConfiguration, ClusterConfiguration, ...)"
else
  grep -q '^apiVersion: *kubeadm\.k8s\.io/' <<<"$config" ||
    problem "KUBEADM_CONFIG has no 'apiVersion: kubeadm.k8s.io/...' document"
  grep -q '^kind: *ClusterConfiguration *$' <<<"$config" ||
    problem "KUBEADM_CONFIG has no 'kind: ClusterConfiguration' document"
  grep -q '^kubernetesVersion:' <<<"$config" ||
    problem "KUBEADM_CONFIG has no top-level 'kubernetesVersion:' line (expected in ClusterConfiguration)"
fi

patches=${KUBEADM_PATCHES-}
if [[ -n ${patches//[[:space:]]/} ]]; then
  [[ $patches == "# kubeadm patch: "* ]] || problem "KUBEADM_PATCHES: expected a '# kubeadm patch: FILE' line before each patch"
  while read -r name; do
    [[ $name =~ ^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)\+strategic\.yaml$ ]] ||
      problem "KUBEADM_PATCHES: '$name' is not a strategic-merge patch file of a control-plane static pod (e.g. kube-apiserver+strategic.yaml)"
  done < <(sed -n 's/^# kubeadm patch: //p' <<<"$patches")
fi

kube_user=${KUBE_USER-}
if ! is_login_name "$kube_user"; then
  problem "KUBE_USER='$kube_user': expected a login name such as ubuntu"
elif ! getent passwd "$kube_user" >/dev/null; then
  problem "KUBE_USER='$kube_user': no such user on this node"
fi

seconds_input INIT_TIMEOUT_SECONDS 1
seconds_input API_WAIT_TIMEOUT_SECONDS 1 "$(scaled 120)"
exit_on_problems
DEADLINE=$((SECONDS + INIT_TIMEOUT_SECONDS)) # remaining() counts down to it

have kubeadm || die "kubeadm is not installed (run install-kube-packages first)"
have kubectl || die "kubectl is not installed (run install-kube-packages first)"

make_work_dir

ensure_user_kubeconfig() {
  local home group
  home=$(getent passwd "$kube_user" | cut -d: -f6)
  group=$(id -gn "$kube_user")
  [[ -d $home ]] || die "home directory '$home' of KUBE_USER=$kube_user does not exist"
  if [[ ! -d $home/.kube ]]; then install -d -m 700 -o "$kube_user" -g "$group" "$home/.kube"; fi
  put_file "$ADMIN_CONF" "$home/.kube/config" 600 "$kube_user" "$group"
}

kubeadm_version=$(kubeadm version -o short) # e.g. v1.34.3
rendered=$(awk -v v="$kubeadm_version" '/^kubernetesVersion:/ { print "kubernetesVersion: " v; next } { print }' <<<"$config")

# --- already initialised? --------------------------------------------------------------------
if [[ -f $ADMIN_CONF ]]; then
  # Right after a reboot the API server needs a moment: wait up to API_WAIT_TIMEOUT_SECONDS before calling it broken.
  probe_deadline=$((SECONDS + API_WAIT_TIMEOUT_SECONDS))
  while :; do
    if err=$(kc --request-timeout="$(scaled 10)s" -n kube-system get configmap kubeadm-config -o name 2>&1 >/dev/null); then
      break
    fi
    if [[ $err == *NotFound* ]]; then
      die "the API server answers but kube-system/kubeadm-config is missing: an earlier 'kubeadm init' stopped half-way; $RESET_HINT"
    fi
    if ((SECONDS >= probe_deadline)); then
      die "$ADMIN_CONF exists but the API server did not answer within ${API_WAIT_TIMEOUT_SECONDS}s (API_WAIT_TIMEOUT_SECONDS; $err); $RESET_HINT"
    fi
    sleep 5
  done
  log "the control plane is already initialised; not running kubeadm init"
  if [[ -f $CONFIG_FILE ]] && ! cmp -s "$CONFIG_FILE" <(printf '%s\n' "$rendered"); then
    warn "KUBEADM_CONFIG differs from $CONFIG_FILE, which the cluster was created with; the changes are NOT applied (re-create the cluster to apply them)"
  fi
  ensure_user_kubeconfig
  printf 'control plane initialised (kubeadm %s)\n' "$kubeadm_version"
  exit 0
fi
if compgen -G '/etc/kubernetes/manifests/*.yaml' >/dev/null; then
  die "static pod manifests exist in /etc/kubernetes/manifests but $ADMIN_CONF does not: an earlier 'kubeadm init' stopped half-way; $RESET_HINT"
fi

# --- kubernetesVersion: the installed kubeadm's, and it must be the requested minor ------------
requested=$(awk '/^kubernetesVersion:/ { print $2; exit }' <<<"$config" | tr -d "\"'")
if [[ $requested =~ ([0-9]+\.[0-9]+) ]]; then
  requested_minor=${BASH_REMATCH[1]}
  if [[ $kubeadm_version =~ ([0-9]+\.[0-9]+) ]] && [[ ${BASH_REMATCH[1]} != "$requested_minor" ]]; then
    die "KUBEADM_CONFIG asks for kubernetesVersion $requested but kubeadm $kubeadm_version is installed"
  fi
else
  warn "kubernetesVersion '$requested' has no minor version; using kubeadm's $kubeadm_version"
fi

# --- write the config, validate, pull, init --------------------------------------------------
ensure_dir "$CONFIG_DIR" 700
printf '%s\n' "$rendered" >"$WORK/kubeadm.yaml"
put_file "$WORK/kubeadm.yaml" "$CONFIG_FILE" 600 root root
# The patches as given, each in its file; files of patches no longer given are removed (kubeadm reads the directory).
mkdir "$WORK/patches"
awk -v dir="$WORK/patches" '/^# kubeadm patch: / { file = dir "/" $4; next } file { print > file }' <<<"$patches"
for file in "$WORK"/patches/*; do
  [[ -e $file ]] || continue
  ensure_dir "$PATCHES_DIR" 700
  put_file "$file" "$PATCHES_DIR/${file##*/}" 600 root root
done
for file in "$PATCHES_DIR"/*; do
  [[ -e $file && ! -e $WORK/patches/${file##*/} ]] || continue
  rm -f "$file"
  log "removed $file (no longer in KUBEADM_PATCHES)"
done
ensure_log_dir

if kubeadm config validate --help >/dev/null 2>&1; then
  kubeadm config validate --config "$CONFIG_FILE" >&2 || die "kubeadm rejected $CONFIG_FILE (see above)"
fi

log "pulling control plane images (log: $LOG_DIR/kubeadm-images.log)"
rc=0
timeout -k "$(scaled 10)" "$(remaining)" kubeadm config images pull --config "$CONFIG_FILE" >"$LOG_DIR/kubeadm-images.log" 2>&1 || rc=$?
if ((rc != 0)); then
  tail -n 20 "$LOG_DIR/kubeadm-images.log" >&2
  is_timeout_exit "$rc" && die "pulling the control plane images did not finish within INIT_TIMEOUT_SECONDS=${INIT_TIMEOUT_SECONDS}s"
  die "pulling the control plane images failed (exit $rc); check imageRepository and the node's registry access"
fi

log "running kubeadm init (log: $LOG_FILE)"
rc=0
(umask 077 && timeout -k "$(scaled 30)" "$(remaining)" kubeadm init --config "$CONFIG_FILE" --skip-token-print >"$LOG_FILE" 2>&1) || rc=$?
if ((rc != 0)); then
  tail -n 60 "$LOG_FILE" >&2
  is_timeout_exit "$rc" && die "kubeadm init did not finish within INIT_TIMEOUT_SECONDS=${INIT_TIMEOUT_SECONDS}s; $RESET_HINT"
  die "kubeadm init failed (exit $rc, full log in $LOG_FILE); $RESET_HINT"
fi
log "kubeadm init succeeded"

ensure_user_kubeconfig
printf 'control plane initialised (kubeadm %s)\n' "$kubeadm_version"
