#!/usr/bin/env bash
# prepull-images.sh: on a worker, pull the images it will run (pause, kube-proxy, CoreDNS, Calico's node images) while the control plane runs kubeadm init.
# Safe to re-run: an image already present is not pulled again; a failed pull only warns (the kubelet pulls it later).
# Inputs (env): IMAGE_REPOSITORY (Kubernetes images), EXTRA_IMAGES (space-separated refs, e.g. Calico), PULL_TIMEOUT_SECONDS,
#               TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

is_repository() { [[ $1 =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$ ]]; }
check_input IMAGE_REPOSITORY is_repository "expected an image repository such as registry.k8s.io"
extra_images=()
list_input extra_images EXTRA_IMAGES is_image_ref "an image reference" 0
timeout_scale_input
seconds_input PULL_TIMEOUT_SECONDS 1
exit_on_problems
DEADLINE=$((SECONDS + PULL_TIMEOUT_SECONDS))

have kubeadm || die "kubeadm is not installed: run install-kube-packages first"
have crictl || die "crictl is not installed (it comes with kubeadm's cri-tools dependency)"
# The exact tags follow the kubeadm installed by the package step; only what runs on every node is pulled.
version=$(kubeadm version -o short)
mapfile -t kube_images < <(kubeadm config images list --kubernetes-version "$version" \
  --image-repository "$IMAGE_REPOSITORY" 2>/dev/null | grep -E '/(pause|kube-proxy|coredns/coredns|coredns):')
((${#kube_images[@]} > 0)) || die "kubeadm config images list gave no pause/kube-proxy/coredns image for $version"

pulled=0 present=0 failed=0
for image in "${kube_images[@]}" "${extra_images[@]}"; do
  if crictl inspecti "$image" >/dev/null 2>&1; then
    present=$((present + 1))
    continue
  fi
  log "pulling $image"
  if timeout "$(remaining)" crictl pull "$image" >/dev/null 2>&1; then
    pulled=$((pulled + 1))
  else
    warn "could not pull $image now; the kubelet will pull it when a pod needs it"
    failed=$((failed + 1))
  fi
done

printf 'images: %d pulled, %d already present, %d deferred to the kubelet\n' "$pulled" "$present" "$failed"
