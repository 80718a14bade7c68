#!/usr/bin/env bash
# install-kube-packages.sh: kubelet, kubeadm, kubectl from a pkgs.k8s.io-style repo, pinned and held; kubelet --node-ip.
# Safe to re-run: installs only when the packages are missing or at another version; files change only when different.
# Inputs (env): KUBERNETES_APT_REPO (repo URL of one minor), KUBERNETES_VERSION (1.34 or 1.34.3), NODE_IP (IPv4),
#               APT_LOCK_TIMEOUT_SECONDS (optional, default 300), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
SOURCES=/etc/apt/sources.list.d/kubernetes.list
PACKAGES=(kubelet kubeadm kubectl)

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
repo=${KUBERNETES_APT_REPO-}
if ! is_http_url "$repo" || [[ $repo == *[\"\'\\]* ]]; then
  problem "KUBERNETES_APT_REPO='$repo': expected the repo URL of one minor, e.g. https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
fi
repo=${repo%/}/ # Release.key and the "/" suite are relative to the URL with its trailing slash

version=${KUBERNETES_VERSION-}
version=${version#v}
if [[ $version =~ ^(1\.[0-9]{1,3})(\.[0-9]{1,3})?$ ]]; then
  minor=${BASH_REMATCH[1]}
  exact=${BASH_REMATCH[2]:+$version} # empty when only a minor was requested
  if [[ $repo =~ /v(1\.[0-9]+)/ && ${BASH_REMATCH[1]} != "$minor" ]]; then
    problem "KUBERNETES_VERSION='${KUBERNETES_VERSION-}' does not match the minor of KUBERNETES_APT_REPO ($repo)"
  fi
else
  problem "KUBERNETES_VERSION='${KUBERNETES_VERSION-}': expected a minor such as 1.34 or a patch such as 1.34.3"
fi

check_input NODE_IP is_ipv4 "expected this node's IPv4 address, e.g. 192.168.141.130"
apt_lock_timeout_input
exit_on_problems

wanted_upstream() { # does this upstream version satisfy KUBERNETES_VERSION?
  if [[ -n $exact ]]; then [[ $1 == "$exact" ]]; else [[ $1 == "$minor".* ]]; fi
}

make_work_dir

# --- what is installed -----------------------------------------------------------------------
satisfied=1
installed=()
for p in "${PACKAGES[@]}"; do
  v=$(installed_version "$p")
  installed+=("$v")
  if [[ -z $v ]] || ! wanted_upstream "$(upstream_of "$v")"; then satisfied=0; fi
done
# all three at one version (kubelet must not be newer than the control plane kubeadm sets up)
[[ ${installed[0]} == "${installed[1]}" && ${installed[1]} == "${installed[2]}" ]] || satisfied=0

printf 'deb [signed-by=%s] %s /\n' "$KEYRING" "$repo" >"$WORK/kubernetes.list"
if ((satisfied)) && [[ -s $KEYRING ]] && cmp -s "$WORK/kubernetes.list" "$SOURCES"; then
  log "kubelet, kubeadm and kubectl ${installed[0]} are already installed from $repo"
else
  install_apt_key "${repo}Release.key" "$KEYRING"
  put_apt_file "$WORK/kubernetes.list" "$SOURCES"

  if ((!satisfied)); then
    apt_update
    # newest kubeadm that matches the request, then the same version of kubelet and kubectl
    target=$(available_versions kubeadm |
      while read -r v; do if wanted_upstream "$(upstream_of "$v")"; then echo "$v"; fi; done | sort -V | tail -n 1) || true
    if [[ -z $target ]]; then
      available=$(available_versions kubeadm | paste -sd' ' - || true)
      die "no kubeadm ${exact:-$minor.x} in $repo; available: ${available:-none}"
    fi
    for p in kubelet kubectl; do
      versions=$(available_versions "$p" || true)
      grep -qxF "$target" <<<"$versions" || die "$p $target is not available from $repo (kubeadm $target is)"
    done
    apt_install "kubelet=$target" "kubeadm=$target" "kubectl=$target"
  fi
fi
ensure_held "${PACKAGES[@]}"

# --- kubelet node IP -------------------------------------------------------------------------
printf 'KUBELET_EXTRA_ARGS=--node-ip=%s\n' "$NODE_IP" >"$WORK/kubelet.default"
put_file "$WORK/kubelet.default" /etc/default/kubelet 644
if ((CHANGED)) && systemctl is-active --quiet kubelet; then
  log "restarting kubelet (node IP changed)"
  systemctl restart kubelet
fi
ensure_enabled kubelet

# --- can this node's glibc run the kubelet? (bionic has 2.27; newer kubelet builds may need more) --
kubelet_bin=$(command -v kubelet) || die "kubelet is not on PATH after installation"
node_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }' || true)
[[ -n $node_glibc ]] || node_glibc=$(ldd --version 2>/dev/null | awk 'NR == 1 { print $NF }' || true)
if have objdump; then
  needed=$(objdump -T "$kubelet_bin" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1 || true)
else # no binutils: the version-requirement strings are in the binary's dynamic section
  needed=$(grep -ao 'GLIBC_2\.[0-9][0-9.]*' "$kubelet_bin" | sed 's/^GLIBC_//' | sort -uV | tail -n 1 || true)
fi
if [[ -n $needed && -n $node_glibc ]] &&
  [[ $(printf '%s\n%s\n' "$needed" "$node_glibc" | sort -V | tail -n 1) != "$node_glibc" ]]; then
  die "kubelet $(installed_version kubelet) needs glibc $needed but this node has $node_glibc; pin an older Kubernetes patch (KUBERNETES_VERSION) or use a newer OS"
fi
if ! out=$("$kubelet_bin" --version 2>&1); then
  die "kubelet does not run on this node: $out"
fi
log "$out runs here (needs glibc ${needed:-unknown}, node has ${node_glibc:-unknown})"

kubeadm version -o short
