"""The Go tools the test bed builds (:mod:`.build` builds them): for each, its module and
pinned version (:mod:`.versions`), its binaries, the ``--version`` probe that says a
cached binary is current, and the ``-X`` link flags the upstream release scripts set.

The API-only test bed needs kube-apiserver, kubectl, etcd and helm (:data:`API_TOOLS`);
the one-node cluster (``tests.cluster``) also needs kubelet, kube-scheduler,
kube-controller-manager, kube-proxy and CoreDNS (:data:`NODE_TOOLS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.controlplane import versions


@dataclass(frozen=True)
class Tool:
    """One wrapper module and the binaries built from it."""

    name: str
    module: str
    version: str
    binaries: dict[str, str]  # binary name -> main package
    probes: dict[str, tuple[tuple[str, ...], str]]  # binary -> (args, expected substring)
    siblings: tuple[str, ...] = ()  # modules required at the same version as `module`
    k8s_staging: bool = False
    ldflags: Callable[[str], list[str]] = field(default=lambda _date: [])
    wrapper: str = ""  # wrapper module directory shared with other tools; default: name
    main_go: str = ""  # when set, the wrapper module is itself the command (this main.go)

    @property
    def src_name(self) -> str:
        return self.wrapper or self.name


def _kube_ldflags(build_date: str) -> list[str]:
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": versions.KUBERNETES,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    # The same variables hack/lib/version.sh sets, in both places Kubernetes reads them.
    return [
        f"-X {pkg}.{var}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for var, value in values.items()
    ]


def _helm_ldflags(_build_date: str) -> list[str]:
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    base = "helm.sh/helm/v3"
    return [
        f"-X {base}/internal/version.version={versions.HELM}",
        f"-X {base}/internal/version.gitTreeState=clean",
        # Default .Capabilities.KubeVersion for `helm template` (helm's Makefile sets these).
        f"-X {base}/pkg/chartutil.k8sVersionMajor={major}",
        f"-X {base}/pkg/chartutil.k8sVersionMinor={minor}",
        f"-X {base}/pkg/lint/rules.k8sVersionMajor={major}",
        f"-X {base}/pkg/lint/rules.k8sVersionMinor={minor}",
    ]


# CoreDNS with the plugins the test cluster's Corefile uses, instead of its root command's
# whole plugin set (cloud DNS SDKs and all): the same server, a third of the build.
_COREDNS_PLUGINS = ("cache", "errors", "health", "kubernetes", "loadbalance", "log", "ready")
_COREDNS_MAIN = (
    "package main\n\n"
    'import (\n\t"github.com/coredns/coredns/coremain"\n'
    + "".join(f'\t_ "github.com/coredns/coredns/plugin/{name}"\n' for name in _COREDNS_PLUGINS)
    + ")\n\nfunc main() { coremain.Run() }\n"
)


def _coredns_ldflags(_build_date: str) -> list[str]:
    # CoreDNS's Makefile stamps the commit; the release is in the code already.
    return [f"-X github.com/coredns/coredns/coremain.GitCommit={versions.COREDNS}"]


_NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy")
_KUBE_PROBE = (("--version",), f"Kubernetes {versions.KUBERNETES}")


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="kubernetes",
        module="k8s.io/kubernetes",
        version=versions.KUBERNETES,
        binaries={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        probes={
            "kube-apiserver": (("--version",), f"Kubernetes {versions.KUBERNETES}"),
            "kubectl": (("version", "--client"), f"Client Version: {versions.KUBERNETES}"),
        },
        k8s_staging=True,
        ldflags=_kube_ldflags,
    ),
    Tool(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=versions.ETCD,
        binaries={"etcd": "go.etcd.io/etcd/server/v3"},
        probes={"etcd": (("--version",), f"etcd Version: {versions.ETCD.lstrip('v')}")},
        siblings=(
            "go.etcd.io/etcd/api/v3",
            "go.etcd.io/etcd/client/pkg/v3",
            "go.etcd.io/etcd/client/v3",
            "go.etcd.io/etcd/pkg/v3",
        ),
    ),
    Tool(
        name="helm",
        module="helm.sh/helm/v3",
        version=versions.HELM,
        binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
        probes={"helm": (("version", "--short"), versions.HELM)},
        ldflags=_helm_ldflags,
    ),
    Tool(
        name="kubernetes-node",
        module="k8s.io/kubernetes",
        version=versions.KUBERNETES,
        binaries={name: f"k8s.io/kubernetes/cmd/{name}" for name in _NODE_BINARIES},
        probes=dict.fromkeys(_NODE_BINARIES, _KUBE_PROBE),
        k8s_staging=True,
        ldflags=_kube_ldflags,
        wrapper="kubernetes",
    ),
    Tool(
        name="coredns",
        module="github.com/coredns/coredns",
        version=versions.COREDNS,
        binaries={"coredns": "aegis.local/testbin/coredns"},
        probes={"coredns": (("-version",), f"CoreDNS-{versions.COREDNS.lstrip('v')}")},
        ldflags=_coredns_ldflags,
        main_go=_COREDNS_MAIN,
    ),
)
TOOL_NAMES = tuple(tool.name for tool in TOOLS)
#: What the API-only test bed (the `kube` fixture) needs; the default of :func:`.build.ensure`.
API_TOOLS = ("kubernetes", "etcd", "helm")
#: What the one-node cluster needs on top of API_TOOLS.
NODE_TOOLS = ("kubernetes-node", "coredns")
