#!/usr/bin/env bash
# configure-container-runtime.sh: containerd config for kubeadm (CRI on, SystemdCgroup, pause image, certs.d registries and CAs), optional docker daemon.json and certs.d CAs.
# Safe to re-run: files are rewritten only when their content differs; services restart only when their config changed.
# Inputs (env): SANDBOX_IMAGE, DOCKER_DAEMON_JSON (may be empty), CONTAINERD_REGISTRY_HOSTS and REGISTRY_CA_CERTS (may be empty;
#   "REGISTRY<TAB>BASE64(hosts.toml or PEM)" lines), RUNTIME_READY_TIMEOUT_SECONDS (optional, default 60), TIMEOUT_SCALE_PERCENT.
set -euo pipefail

CONFIG=/etc/containerd/config.toml
CERTS_D=/etc/containerd/certs.d
DAEMON_JSON=/etc/docker/daemon.json
DOCKER_CERTS_D=/etc/docker/certs.d
HOSTS_MARKER='# Managed by kubeadm-libvirt (configure-container-runtime.sh); removed when no longer configured.'

make_work_dir

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
sandbox_image=${SANDBOX_IMAGE-}
if ! is_image_ref "$sandbox_image" || ((${#sandbox_image} > 255)); then
  problem "SANDBOX_IMAGE='$sandbox_image': expected an image reference such as registry.k8s.io/pause:3.10.1"
fi

daemon_json=${DOCKER_DAEMON_JSON-}
if [[ -n ${daemon_json//[[:space:]]/} ]]; then
  if [[ ! $daemon_json =~ ^[[:space:]]*\{ ]]; then
    problem "DOCKER_DAEMON_JSON: expected a JSON object (starting with '{'), got '${daemon_json:0:40}...'"
  elif have python3 &&
    ! printf '%s' "$daemon_json" | python3 -c 'import json, sys; json.load(sys.stdin)' 2>/dev/null; then
    problem "DOCKER_DAEMON_JSON: not valid JSON"
  fi
else
  daemon_json=''
fi

seconds_input RUNTIME_READY_TIMEOUT_SECONDS 1 "$(scaled 60)"

# Registry records: decoded into $WORK now, so that a bad record is reported before anything changes.
REGISTRY_RE='^(_default|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?)$'
# decode_records NAME KIND: env NAME holds "REGISTRY<TAB>BASE64" lines; each becomes a file in $WORK (the marker
# line, then the decoded text: TOML comments it, and PEM readers skip text before "-----BEGIN"), recorded as
# "REGISTRY=FILE" in RECORDS. Bad lines are recorded as problems.
decode_records() {
  local name=$1 kind=$2 line registry b64 where decoded lineno=0
  local -A seen=()
  RECORDS=()
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    line=${line%$'\r'}
    [[ -n ${line//[[:space:]]/} ]] || continue
    where="$name line $lineno"
    if [[ $line != *$'\t'* ]]; then
      problem "$where: expected 'REGISTRY<TAB>BASE64_OF_${kind^^}', found no tab"
      continue
    fi
    registry=${line%%$'\t'*}
    b64=${line#*$'\t'}
    if [[ ! $registry =~ $REGISTRY_RE ]]; then
      problem "$where: registry '$registry' is not a host[:port] name (or _default)"
      continue
    fi
    if [[ -n ${seen[$registry]-} ]]; then
      problem "$where: registry '$registry' appears twice"
      continue
    fi
    seen[$registry]=1
    decoded="$WORK/$name.$lineno"
    if [[ ! $b64 =~ ^[A-Za-z0-9+/]+={0,2}$ ]] || ! printf '%s' "$b64" | base64 -d >"$decoded" 2>/dev/null ||
      [[ ! -s $decoded ]]; then
      problem "$where: the $kind for '$registry' is not valid non-empty base64"
      continue
    fi
    if [[ $kind == ca.crt ]] && ! grep -q -- '-----BEGIN CERTIFICATE-----' "$decoded"; then
      problem "$where: the ca.crt for '$registry' is not a PEM certificate"
      continue
    fi
    { echo "$HOSTS_MARKER"; cat "$decoded"; } >"$decoded.$kind"
    RECORDS+=("$registry=$decoded.$kind")
  done <<<"${!name-}"
}
decode_records CONTAINERD_REGISTRY_HOSTS hosts.toml
registries=("${RECORDS[@]}")
decode_records REGISTRY_CA_CERTS ca.crt
ca_certs=("${RECORDS[@]}")

exit_on_problems

have containerd || die "containerd is not installed (run install-container-runtime first)"
have ctr || die "ctr (containerd's client) is not installed"

# --- /etc/containerd/config.toml -------------------------------------------------------------
# Regenerated from the built-in defaults: the containerd.io package ships a config.toml with
# disabled_plugins = ["cri"], and Debian's points CNI at /usr/lib/cni instead of /opt/cni/bin.
generated="$WORK/config.toml"
{
  echo '# Managed by kubeadm-libvirt (configure-container-runtime.sh): "containerd config default" plus'
  echo '# SystemdCgroup = true, the sandbox (pause) image and config_path for certs.d/*/hosts.toml.'
  containerd config default
} >"$generated"
config_version=$(awk -F= '/^version[[:space:]]*=/ { gsub(/[[:space:]"]/, "", $2); print $2; exit }' "$generated")
registry_section='/\.registry\]$/,/^[[:space:]]*\[/'
case $config_version in
  2) # containerd 1.x
    sed -i \
      -e 's/^\([[:space:]]*SystemdCgroup = \)false$/\1true/' \
      -e "s#^\\([[:space:]]*sandbox_image = \\)\".*\"\$#\\1\"$sandbox_image\"#" \
      -e "$registry_section"' s#^\([[:space:]]*config_path = \)""$#\1"/etc/containerd/certs.d"#' \
      "$generated"
    expected=('SystemdCgroup = true' "sandbox_image = \"$sandbox_image\"" "config_path = \"$CERTS_D\"") ;;
  3) # containerd 2.x writes single-quoted strings
    sed -i \
      -e 's/^\([[:space:]]*SystemdCgroup = \)false$/\1true/' \
      -e "s#^\\([[:space:]]*sandbox = \\)'.*'\$#\\1'$sandbox_image'#" \
      -e "$registry_section"" s#^\\([[:space:]]*config_path = \\)''\$#\\1'/etc/containerd/certs.d'#" \
      "$generated"
    expected=('SystemdCgroup = true' "sandbox = '$sandbox_image'" "config_path = '$CERTS_D'") ;;
  *) die "'containerd config default' produced config version '${config_version:-none}'; only versions 2 and 3 are supported" ;;
esac
for line in "${expected[@]}"; do
  grep -qxF -- "$line" <(sed 's/^[[:space:]]*//' "$generated") ||
    die "could not set '$line' in the generated containerd config (version $config_version, $(containerd --version)): the default config no longer has the expected line"
done
put_file "$generated" "$CONFIG" 644
containerd_changed=$CHANGED

# --- registry files (certs.d/REGISTRY/hosts.toml and ca.crt) ---------------------------------
# containerd reads hosts.toml and Docker its certs.d on every pull, so these need no restart. A file this script
# wrote (its first line is the marker) goes again when its registry is no longer configured.
# sync_registry_files DIR FILE RECORD...: DIR/REGISTRY/FILE for each REGISTRY=SOURCE record; stale ones removed.
sync_registry_files() {
  local dir=$1 file=$2 entry registry f
  shift 2
  local -A wanted=()
  for entry in "$@"; do
    registry=${entry%%=*}
    wanted[$registry]=1
    put_file "${entry#*=}" "$dir/$registry/$file" 644
  done
  for f in "$dir"/*/"$file"; do
    [[ -f $f ]] || continue
    registry=$(basename "$(dirname "$f")")
    if [[ -z ${wanted[$registry]-} ]] && [[ $(head -n 1 "$f") == "$HOSTS_MARKER" ]]; then
      log "removing $f (no longer configured for $registry)"
      rm -f "$f"
      rmdir --ignore-fail-on-non-empty "$(dirname "$f")"
    fi
  done
}
sync_registry_files "$CERTS_D" hosts.toml "${registries[@]}"
sync_registry_files "$CERTS_D" ca.crt "${ca_certs[@]}"

# --- crictl (from cri-tools) talks to containerd ---------------------------------------------
cat >"$WORK/crictl.yaml" <<EOF
# Managed by kubeadm-libvirt (configure-container-runtime.sh).
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: $(scaled 10)
EOF
put_file "$WORK/crictl.yaml" /etc/crictl.yaml 644

# --- docker ----------------------------------------------------------------------------------
docker_installed=0
if have dockerd; then docker_installed=1; fi
docker_changed=0
if [[ -n $daemon_json ]]; then
  if ((docker_installed)); then
    printf '%s\n' "${daemon_json%$'\n'}" >"$WORK/daemon.json"
    put_file "$WORK/daemon.json" "$DAEMON_JSON" 644
    docker_changed=$CHANGED
  else
    log "docker is not installed: DOCKER_DAEMON_JSON is not written"
  fi
fi
if ((docker_installed)); then sync_registry_files "$DOCKER_CERTS_D" ca.crt "${ca_certs[@]}"; fi

# --- services --------------------------------------------------------------------------------
ensure_service() { # ensure_service UNIT CHANGED: restart if its config changed, else start if stopped; enable
  local unit=$1 changed=$2
  if ((changed)); then
    log "restarting $unit (configuration changed)"
    systemctl restart "$unit"
  elif ! systemctl is-active --quiet "$unit"; then
    log "starting $unit"
    systemctl start "$unit"
  fi
  ensure_enabled "$unit"
}
ensure_service containerd "$containerd_changed"
if ((docker_installed)); then ensure_service docker "$docker_changed"; fi

# --- containerd answers, with the CRI plugin loaded ------------------------------------------
DEADLINE=$((SECONDS + RUNTIME_READY_TIMEOUT_SECONDS))
until timeout "$(scaled 10)" ctr version >/dev/null 2>&1; do
  if ((SECONDS >= DEADLINE)); then
    systemctl status containerd --no-pager >&2 || true
    die "containerd did not answer on /run/containerd/containerd.sock within ${RUNTIME_READY_TIMEOUT_SECONDS}s"
  fi
  sleep 2
done
cri_status=$(timeout "$(scaled 10)" ctr plugins ls 2>/dev/null | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $NF }' || true)
if [[ $cri_status != ok ]]; then
  journalctl -u containerd --no-pager -n 30 >&2 || true
  die "containerd's CRI plugin is '${cri_status:-missing}', not 'ok' (kubeadm needs it); see the log above"
fi

printf 'containerd %s ready: CRI ok, SystemdCgroup = true, sandbox image %s\n' \
  "$(containerd --version | awk '{ print $3 }')" "$sandbox_image"
