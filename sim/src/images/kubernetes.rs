//! Kubernetes' images. Offline: Kubernetes, etcd and CoreDNS built from the
//! Go module proxy through wrapper modules kept under `recipes/`, the pause
//! container compiled from the C file that ships in Kubernetes' module, one
//! small image per component (`FROM scratch` but kube-proxy's), and a node
//! image made like kind's that carries them all. Upstream: kind's own node
//! image, pinned by version and digest.
//!
//! The versions are kubeadm's own for this release (its `constants.go`),
//! so kubeadm finds every image it asks for already on the node.

use super::recipe::{Embed, Fetch, GoBuild, Recipe, RecipeKind};

pub const KUBE_VERSION: &str = "v1.34.2";
pub const ETCD_VERSION: &str = "3.6.5-0";
pub const COREDNS_VERSION: &str = "v1.12.1";
pub const PAUSE_VERSION: &str = "3.10.1";
/// Where kubeadm looks for images (its default repository).
pub const REGISTRY: &str = "registry.k8s.io";
/// kind's node image for the same Kubernetes release, by tag and digest.
pub const UPSTREAM_NODE: &str =
    "kindest/node:v1.34.2@sha256:745f8ed46d8e99517774768227fd1a0af34a6bf395aef9c7ed98fbce0e263918";

/// Version information as Kubernetes' own build stamps it
/// (`hack/lib/version.sh`): kubeadm and kubelet compare versions, and an
/// unstamped build calls itself v0.0.0-master.
const KUBE_LDFLAGS: &[&str] = &[
    "-s",
    "-w",
    "-X=k8s.io/component-base/version.gitVersion=v1.34.2",
    "-X=k8s.io/component-base/version.gitMajor=1",
    "-X=k8s.io/component-base/version.gitMinor=34",
    "-X=k8s.io/component-base/version.gitTreeState=clean",
    "-X=k8s.io/component-base/version.gitCommit=0000000000000000000000000000000000000000",
    "-X=k8s.io/component-base/version.buildDate=2025-11-11T00:00:00Z",
    "-X=k8s.io/client-go/pkg/version.gitVersion=v1.34.2",
    "-X=k8s.io/client-go/pkg/version.gitMajor=1",
    "-X=k8s.io/client-go/pkg/version.gitMinor=34",
    "-X=k8s.io/client-go/pkg/version.gitTreeState=clean",
    "-X=k8s.io/client-go/pkg/version.gitCommit=0000000000000000000000000000000000000000",
    "-X=k8s.io/client-go/pkg/version.buildDate=2025-11-11T00:00:00Z",
];

pub static KUBERNETES_BUILD: GoBuild = GoBuild {
    name: "kubernetes",
    files: &[
        ("go.mod", include_str!("recipes/kubernetes/go.mod")),
        ("go.sum", include_str!("recipes/kubernetes/go.sum")),
        ("tools.go", include_str!("recipes/kubernetes/tools.go")),
    ],
    packages: &[
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kube-proxy",
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kubeadm",
        "k8s.io/kubernetes/cmd/kubectl",
    ],
    ldflags: KUBE_LDFLAGS,
    c_programs: &[("k8s.io/kubernetes", "build/pause/linux/pause.c", "pause", "-DVERSION=3.10.1")],
    min_go: (1, 24),
};

pub static ETCD_BUILD: GoBuild = GoBuild {
    name: "etcd",
    files: &[
        ("go.mod", include_str!("recipes/etcd/go.mod")),
        ("go.sum", include_str!("recipes/etcd/go.sum")),
        ("main.go", include_str!("recipes/etcd/main.go")),
    ],
    packages: &["."],
    ldflags: &["-s", "-w"],
    c_programs: &[],
    min_go: (1, 24),
};

pub static COREDNS_BUILD: GoBuild = GoBuild {
    name: "coredns",
    files: &[
        ("go.mod", include_str!("recipes/coredns/go.mod")),
        ("go.sum", include_str!("recipes/coredns/go.sum")),
        ("main.go", include_str!("recipes/coredns/main.go")),
    ],
    packages: &["."],
    ldflags: &["-s", "-w"],
    c_programs: &[],
    min_go: (1, 24),
};

/// kube-state-metrics, for Prometheus's view of the cluster (pods ready
/// per zone, nodes' conditions). Its release follows client-go 0.34, the
/// cluster's minor version.
pub static KUBE_STATE_METRICS_BUILD: GoBuild = GoBuild {
    name: "kube-state-metrics",
    files: &[
        ("go.mod", include_str!("recipes/kube-state-metrics/go.mod")),
        ("go.sum", include_str!("recipes/kube-state-metrics/go.sum")),
        ("main.go", include_str!("recipes/kube-state-metrics/main.go")),
    ],
    packages: &["."],
    ldflags: &["-s", "-w"],
    c_programs: &[],
    min_go: (1, 24),
};

fn scratch(
    name: &'static str,
    dockerfile: &'static str,
    build: &'static GoBuild,
    take: &'static [&'static str],
) -> Recipe {
    Recipe {
        name,
        kind: RecipeKind::Dockerfile { dockerfile, files: &[], fetch: Some(Fetch::Go { build, take }), embeds: &[] },
    }
}

// Static binaries need nothing around them; kubeadm's manifests run them by
// name, so they sit on PATH as in the official images.
pub fn apiserver() -> Recipe {
    scratch(
        "kube-apiserver",
        "FROM scratch\nCOPY libs/kube-apiserver /usr/local/bin/kube-apiserver\nENV PATH=/usr/local/bin:/usr/bin:/bin\n",
        &KUBERNETES_BUILD,
        &["kube-apiserver"],
    )
}

pub fn controller_manager() -> Recipe {
    scratch(
        "kube-controller-manager",
        "FROM scratch\nCOPY libs/kube-controller-manager /usr/local/bin/kube-controller-manager\nENV PATH=/usr/local/bin:/usr/bin:/bin\n",
        &KUBERNETES_BUILD,
        &["kube-controller-manager"],
    )
}

pub fn scheduler() -> Recipe {
    scratch(
        "kube-scheduler",
        "FROM scratch\nCOPY libs/kube-scheduler /usr/local/bin/kube-scheduler\nENV PATH=/usr/local/bin:/usr/bin:/bin\n",
        &KUBERNETES_BUILD,
        &["kube-scheduler"],
    )
}

pub fn proxy() -> Recipe {
    Recipe {
        name: "kube-proxy",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/kube-proxy.Dockerfile"),
            files: &[],
            fetch: Some(Fetch::Go { build: &KUBERNETES_BUILD, take: &["kube-proxy"] }),
            embeds: &[],
        },
    }
}

pub fn pause() -> Recipe {
    scratch(
        "pause",
        "FROM scratch\nCOPY libs/pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n",
        &KUBERNETES_BUILD,
        &["pause"],
    )
}

pub fn etcd() -> Recipe {
    scratch(
        "etcd",
        "FROM scratch\nCOPY libs/etcd /usr/local/bin/etcd\nENV PATH=/usr/local/bin:/usr/bin:/bin\n",
        &ETCD_BUILD,
        &["etcd"],
    )
}

pub fn coredns() -> Recipe {
    scratch(
        "coredns",
        "FROM scratch\nCOPY libs/coredns /coredns\nENTRYPOINT [\"/coredns\"]\n",
        &COREDNS_BUILD,
        &["coredns"],
    )
}

/// The kubectl the offline build made on this host, if it has run: a
/// client of the same release as the cluster, for users without one.
pub fn host_kubectl() -> Option<std::path::PathBuf> {
    super::gobuild::cached(&KUBERNETES_BUILD).map(|d| d.join("kubectl"))
}

/// The images every node runs (pod sandboxes, kube-proxy, CoreDNS) and
/// those only control-plane nodes do, as saved into the node image.
pub const NODE_IMAGES: &[Embed] = &[
    Embed { recipe: pause, reference: "registry.k8s.io/pause:3.10.1", file: "pause.tar" },
    Embed { recipe: proxy, reference: "registry.k8s.io/kube-proxy:v1.34.2", file: "kube-proxy.tar" },
    Embed { recipe: coredns, reference: "registry.k8s.io/coredns/coredns:v1.12.1", file: "coredns.tar" },
    Embed { recipe: apiserver, reference: "registry.k8s.io/kube-apiserver:v1.34.2", file: "kube-apiserver.tar" },
    Embed {
        recipe: controller_manager,
        reference: "registry.k8s.io/kube-controller-manager:v1.34.2",
        file: "kube-controller-manager.tar",
    },
    Embed { recipe: scheduler, reference: "registry.k8s.io/kube-scheduler:v1.34.2", file: "kube-scheduler.tar" },
    Embed { recipe: etcd, reference: "registry.k8s.io/etcd:3.6.5-0", file: "etcd.tar" },
];

/// Which of [`NODE_IMAGES`] a worker needs (the rest serve static pods).
pub fn worker_needs(e: &Embed) -> bool {
    ["pause.tar", "kube-proxy.tar", "coredns.tar"].contains(&e.file)
}

pub fn node() -> Recipe {
    Recipe {
        name: "kube-node",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/kube-node/Dockerfile"),
            files: &[],
            fetch: Some(Fetch::Go { build: &KUBERNETES_BUILD, take: &["kubelet", "kubeadm", "kubectl"] }),
            embeds: NODE_IMAGES,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_constants_agree_with_what_is_built_and_embedded() {
        for flag in KUBE_LDFLAGS.iter().filter(|f| f.contains("gitVersion=")) {
            assert!(flag.ends_with(KUBE_VERSION), "{flag}");
        }
        assert!(KUBERNETES_BUILD.files[0].1.contains(&format!("k8s.io/kubernetes {KUBE_VERSION}")));
        let refs: Vec<&str> = NODE_IMAGES.iter().map(|e| e.reference).collect();
        for want in [
            format!("{REGISTRY}/pause:{PAUSE_VERSION}"),
            format!("{REGISTRY}/etcd:{ETCD_VERSION}"),
            format!("{REGISTRY}/coredns/coredns:{COREDNS_VERSION}"),
            format!("{REGISTRY}/kube-apiserver:{KUBE_VERSION}"),
        ] {
            assert!(refs.contains(&want.as_str()), "{want} missing from {refs:?}");
        }
        assert!(UPSTREAM_NODE.contains(&format!(":{KUBE_VERSION}@sha256:")), "{UPSTREAM_NODE}");
    }

    #[test]
    fn go_builds_name_their_outputs_as_go_build_does() {
        assert_eq!(
            KUBERNETES_BUILD.outputs(),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
                "kubelet",
                "kubeadm",
                "kubectl",
                "pause"
            ]
        );
        assert_eq!(ETCD_BUILD.outputs(), ["etcd"]);
        assert_eq!(COREDNS_BUILD.outputs(), ["coredns"]);
    }

    #[test]
    fn the_node_image_changes_when_an_embedded_image_does() {
        let a = node().hash();
        assert_eq!(a, node().hash());
        assert_ne!(a, apiserver().hash());
        assert_ne!(apiserver().hash(), scheduler().hash());
    }
}
