"""Every image the cluster will pull, one reference per line: what an air-gapped user copies into the registry.

    python3 -m components.images --stack dev [--set kubernetesVersion=1.34.4 ...]

kubeadm's images for the version and imageRepository (as `kubeadm config images list` names them), the
tigera-operator and every image it deploys for the rendered Installation, and the smoke test's image. The stack
config is read as the offline plan reads it (components/plan.py), and the plan prints the same list.

A reference that cannot be named exactly is an error here (exit 2, naming the key and the fix), not a guess: the
list is meant to be fed to a copying tool, where a wrong tag fails later and less clearly. That happens for a
kubernetesVersion without a patch (the patch, hence every kubeadm tag, is chosen on the node on the day it
installs), for a patch whose tags components/versions.py has not read, and for a calicoVersion whose operator tag
it does not know. The offline plan, which must work for the dev stack's `1.34`, prints those as `# not named:` lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import versions
from components.config import ClusterConfig, KubernetesSpec

DEFAULT_IMAGE_REPOSITORY = "registry.k8s.io"  # kubeadm's default; only there is CoreDNS under coredns/coredns
KUBERNETES_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


@dataclass(frozen=True)
class ImageList:
    images: tuple[str, ...]
    unknown: tuple[str, ...]  # one "key: value why; fix: ..." line per reference that cannot be named


class UnnamedImages(Exception):
    """Some image cannot be named exactly; the message lists why, one problem per line."""


def kubeadm_images(kubernetes: KubernetesSpec) -> tuple[list[str], str | None]:
    """kubeadm's images in the order `kubeadm config images list` prints them, or the reason they cannot be named."""
    parts = kubernetes.version.split(".")
    if len(parts) < 3:
        return [], (
            f"kubernetesVersion: {kubernetes.version!r} names no patch, so no image tag is known (each node installs "
            f"the newest {kubernetes.minor} patch on the day it is created); fix: pin a patch, e.g. "
            f"{kubernetes.minor}.{max(versions.KUBEADM_IMAGE_TAGS[kubernetes.minor_number])}"
        )
    tags = versions.kubeadm_image_tags(kubernetes.minor_number, int(parts[2]))
    if tags is None:
        return [], (
            f"kubernetesVersion: {kubernetes.version!r} is a patch whose coredns/pause/etcd tags components/versions.py "
            f"has not read (known: {versions.known_patches(kubernetes.minor_number)}); fix: pin a known patch, or add "
            f"its row to KUBEADM_IMAGE_TAGS from cmd/kubeadm/app/constants/constants.go at v{kubernetes.version}"
        )
    repository = kubernetes.image_repository
    # kubeadm renamed CoreDNS to coredns/coredns on registry.k8s.io only; a mirror keeps it flat (images.go).
    coredns = f"{repository}/coredns" if repository == DEFAULT_IMAGE_REPOSITORY else repository
    images = [f"{repository}/{component}:v{kubernetes.version}" for component in KUBERNETES_COMPONENTS]
    images += [f"{coredns}/coredns:{tags.coredns}", f"{repository}/pause:{tags.pause}", f"{repository}/etcd:{tags.etcd}"]
    return images, None


def calico_images(kubernetes: KubernetesSpec) -> tuple[list[str], str | None]:
    """The operator, then what it deploys; the operator's tag comes from a table (see CALICO_OPERATOR_TAGS)."""
    registry, version = kubernetes.calico_registry, kubernetes.calico_version
    cluster = versions.CALICO_CLUSTER_IMAGES + ((versions.CALICO_API_SERVER_IMAGE,) if kubernetes.calico_api_server else ())
    deployed = [f"{registry}calico/{name}:v{version}" for name in cluster]
    deployed += list(versions.calico_node_images(registry, version))
    operator_tag = versions.CALICO_OPERATOR_TAGS.get(version)
    if operator_tag is None:
        known = ", ".join(versions.CALICO_OPERATOR_TAGS)
        return deployed, (
            f"calicoVersion: {version!r} has no known tigera/operator tag (known: {known}); fix: use one of those, or add "
            f"the tag that release's tigera-operator.yaml pins to CALICO_OPERATOR_TAGS in components/versions.py"
        )
    return [f"{registry}{versions.CALICO_OPERATOR_IMAGE}:{operator_tag}", *deployed], None


def cluster_images(config: ClusterConfig) -> ImageList:
    kubernetes = config.kubernetes
    images: list[str] = []
    unknown: list[str] = []
    for part, problem in (kubeadm_images(kubernetes), calico_images(kubernetes)):
        images += part
        if problem:
            unknown.append(problem)
    if kubernetes.smoke_test:
        images.append(kubernetes.smoke_image)
    return ImageList(images=tuple(images), unknown=tuple(unknown))


def render_images(config: ClusterConfig) -> str:
    """One reference per line, or UnnamedImages listing every reference that cannot be named."""
    listed = cluster_images(config)
    if listed.unknown:
        lines = "\n".join(f"  - {problem}" for problem in listed.unknown)
        raise UnnamedImages(f"Cannot name every image the cluster pulls ({len(listed.unknown)} problem(s)):\n{lines}")
    return "".join(f"{image}\n" for image in listed.images)


def main(argv: list[str] | None = None) -> int:
    from components import plan  # plan imports this module for its own image section

    def render(stack: str, overrides: dict) -> str:
        try:
            return render_images(plan.load_config(stack, overrides))
        except UnnamedImages as error:
            raise plan.UsageError(str(error)) from None

    return plan.run_cli(argv, __doc__.splitlines()[0], render)


if __name__ == "__main__":
    raise SystemExit(main())
