//! Offline image recipes as data: a Dockerfile and the files it copies, plus
//! the parent they build on. The tag is a hash of all of it, so an image is
//! rebuilt exactly when its recipe (or an ancestor's) changes.

use sha2::{Digest, Sha256};

use crate::stack::ServiceKind;

/// The Debian release every offline image is built from.
pub const SUITE: &str = "bookworm";

#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: &'static str,
    pub kind: RecipeKind,
}

#[derive(Debug, Clone)]
pub enum RecipeKind {
    /// `debootstrap --variant=minbase` + `docker import`.
    Base { include: &'static [&'static str] },
    /// `docker build` on top of the base. `fetch` names artifacts resolved
    /// on the host (where the package registries' certificates are trusted)
    /// and copied into the context as `libs/`; `embeds` are other offline
    /// images saved into the context as `images/NAME.tar` under the
    /// reference a node's container runtime knows them by.
    Dockerfile {
        dockerfile: &'static str,
        files: &'static [(&'static str, &'static str)],
        fetch: Option<Fetch>,
        embeds: &'static [Embed],
    },
}

/// An image carried inside another (a Kubernetes node's preloaded images).
#[derive(Debug, Clone, Copy)]
pub struct Embed {
    pub recipe: fn() -> Recipe,
    /// The reference it is saved under (`registry.k8s.io/pause:3.10.1`).
    pub reference: &'static str,
    /// The file name under `images/` in the build context.
    pub file: &'static str,
}

/// Programs built from Go modules by the host's Go toolchain: a module of
/// ours (its go.mod pins the upstream modules; go.sum their hashes) and the
/// packages to build from it. Outputs are cached on the host by a hash of
/// all of it, so every image that takes a program shares one build.
#[derive(Debug, PartialEq, Eq)]
pub struct GoBuild {
    pub name: &'static str,
    /// go.mod, go.sum and any source files of the wrapper module.
    pub files: &'static [(&'static str, &'static str)],
    /// Import paths, or `.` for the wrapper module's own main package.
    pub packages: &'static [&'static str],
    /// `-X` flags (and the like) for the linker.
    pub ldflags: &'static [&'static str],
    /// C programs that ship inside a module: (module, path in it, output
    /// name, extra compiler flags), compiled `-static` by the host's gcc.
    pub c_programs: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// The Go release the modules need at least (the go.mod `go` line).
    pub min_go: (u32, u32),
}

/// Artifacts an image needs from a package registry, fetched on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// A pom whose runtime dependencies `mvn` copies.
    Maven(&'static str),
    /// Python requirements `pip wheel` builds into wheels, resolved as of
    /// `uploaded_before` (an ISO 8601 time) except the `exempt` ones,
    /// which are fetched as pinned without their dependencies.
    Pip { requirements: &'static str, uploaded_before: &'static str, exempt: &'static [&'static str] },
    /// Programs of a [`GoBuild`]; `take` names the outputs this image gets.
    Go { build: &'static GoBuild, take: &'static [&'static str] },
}

/// Packages added to the minbase: enough for apt over HTTP inside the build
/// and for the images' entrypoints, and nothing more.
const BASE_INCLUDE: &[&str] = &["ca-certificates"];

pub fn base() -> Recipe {
    Recipe { name: "base", kind: RecipeKind::Base { include: BASE_INCLUDE } }
}

pub fn postgres() -> Recipe {
    Recipe {
        name: "postgres",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/postgres/Dockerfile"),
            files: &[("entrypoint.sh", include_str!("recipes/postgres/entrypoint.sh"))],
            fetch: None,
            embeds: &[],
        },
    }
}

pub fn kafka() -> Recipe {
    Recipe {
        name: "kafka",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/kafka/Dockerfile"),
            files: &[
                ("entrypoint.sh", include_str!("recipes/kafka/entrypoint.sh")),
                ("log4j2.properties", include_str!("recipes/kafka/log4j2.properties")),
                ("jmx-exporter.yml", include_str!("recipes/kafka/jmx-exporter.yml")),
            ],
            fetch: Some(Fetch::Maven(include_str!("recipes/kafka/pom.xml"))),
            embeds: &[],
        },
    }
}

pub fn influxdb() -> Recipe {
    Recipe {
        name: "influxdb",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/influxdb/Dockerfile"),
            files: &[],
            fetch: None,
            embeds: &[],
        },
    }
}

/// HAProxy: the database's writer and reader endpoints, the cluster's API
/// endpoint and the ALB's nodes.
pub fn haproxy() -> Recipe {
    Recipe {
        name: "haproxy",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/haproxy/Dockerfile"),
            files: &[],
            fetch: None,
            embeds: &[],
        },
    }
}

/// PowerDNS Authoritative: Route 53's hosted zones.
pub fn pdns() -> Recipe {
    Recipe {
        name: "pdns",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/pdns/Dockerfile"),
            files: &[],
            fetch: None,
            embeds: &[],
        },
    }
}

/// Prometheus and the exporters it runs beside it: PostgreSQL's, and
/// kube-state-metrics for the cluster.
pub fn prometheus() -> Recipe {
    Recipe {
        name: "prometheus",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/prometheus/Dockerfile"),
            files: &[("entrypoint.sh", include_str!("recipes/prometheus/entrypoint.sh"))],
            fetch: Some(Fetch::Go {
                build: &super::kubernetes::KUBE_STATE_METRICS_BUILD,
                take: &["kube-state-metrics"],
            }),
            embeds: &[],
        },
    }
}

/// LocalStack's S3, run by its Python runtime (no Docker inside).
pub fn localstack() -> Recipe {
    Recipe {
        name: "localstack",
        kind: RecipeKind::Dockerfile {
            dockerfile: include_str!("recipes/localstack/Dockerfile"),
            files: &[("requirements.txt", LOCALSTACK_REQUIREMENTS)],
            fetch: Some(Fetch::Pip {
                requirements: LOCALSTACK_REQUIREMENTS,
                uploaded_before: "2026-02-01T00:00:00Z",
                exempt: &["localstack-core==4.13.1"],
            }),
            embeds: &[],
        },
    }
}

const LOCALSTACK_REQUIREMENTS: &str = include_str!("recipes/localstack/requirements.txt");

/// Every offline image a service needs: its own, and helpers it runs beside it.
pub fn for_service_all(kind: ServiceKind) -> Vec<Recipe> {
    match kind {
        ServiceKind::Postgres => vec![postgres(), haproxy()],
        // The node image embeds the component images, built on the way.
        ServiceKind::Kubernetes => vec![super::kubernetes::node(), haproxy()],
        k => vec![for_service(k)],
    }
}

pub fn for_service(kind: ServiceKind) -> Recipe {
    match kind {
        ServiceKind::Postgres => postgres(),
        ServiceKind::Kafka => kafka(),
        ServiceKind::Influxdb => influxdb(),
        ServiceKind::S3 => localstack(),
        ServiceKind::Kubernetes => super::kubernetes::node(),
        ServiceKind::Alb | ServiceKind::Nlb => haproxy(),
        ServiceKind::Route53 => pdns(),
        ServiceKind::Prometheus => prometheus(),
        // Our own servers, mounted into the base.
        ServiceKind::Auth0 | ServiceKind::Vault | ServiceKind::Api => base(),
    }
}

impl GoBuild {
    /// A short hash of everything that decides the programs.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        for (path, body) in self.files {
            h.update(path.as_bytes());
            h.update(b"\0");
            h.update(body.as_bytes());
            h.update(b"\0");
        }
        for part in self.packages.iter().chain(self.ldflags) {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        for (module, path, out, flags) in self.c_programs {
            for part in [module, path, out, flags] {
                h.update(part.as_bytes());
                h.update(b"\0");
            }
        }
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// The names `go build -o DIR/` gives its outputs, and the C programs'.
    pub fn outputs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .packages
            .iter()
            .map(|p| {
                let path = if *p == "." { module_path(self).unwrap_or(self.name) } else { p };
                path.rsplit('/').next().unwrap_or(path).to_string()
            })
            .collect();
        out.extend(self.c_programs.iter().map(|(_, _, o, _)| o.to_string()));
        out
    }
}

/// The `module` line of a build's go.mod.
fn module_path(b: &GoBuild) -> Option<&'static str> {
    let (_, gomod) = b.files.iter().find(|(p, _)| *p == "go.mod")?;
    gomod.lines().find_map(|l| l.strip_prefix("module ")).map(str::trim)
}

impl Recipe {
    /// A short, stable hash of everything that shapes the image.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(SUITE.as_bytes());
        match &self.kind {
            RecipeKind::Base { include } => {
                h.update(b"base");
                for p in *include {
                    h.update(p.as_bytes());
                    h.update(b"\0");
                }
            }
            RecipeKind::Dockerfile { dockerfile, files, fetch, embeds } => {
                h.update(base().hash().as_bytes());
                h.update(dockerfile.as_bytes());
                for (path, body) in *files {
                    h.update(path.as_bytes());
                    h.update(b"\0");
                    h.update(body.as_bytes());
                    h.update(b"\0");
                }
                match fetch {
                    Some(Fetch::Maven(pom)) => {
                        h.update(b"maven\0");
                        h.update(pom.as_bytes());
                    }
                    Some(Fetch::Pip { requirements, uploaded_before, exempt }) => {
                        h.update(b"pip\0");
                        h.update(requirements.as_bytes());
                        h.update(uploaded_before.as_bytes());
                        for e in *exempt {
                            h.update(e.as_bytes());
                            h.update(b"\0");
                        }
                    }
                    Some(Fetch::Go { build, take }) => {
                        h.update(b"go\0");
                        h.update(build.hash().as_bytes());
                        for t in *take {
                            h.update(t.as_bytes());
                            h.update(b"\0");
                        }
                    }
                    None => {}
                }
                for e in *embeds {
                    h.update(b"embed\0");
                    h.update((e.recipe)().hash().as_bytes());
                    h.update(e.reference.as_bytes());
                    h.update(e.file.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    pub fn tag(&self) -> String {
        format!("voyager-sim/{}:{}-{}", self.name, SUITE, self.hash())
    }

    /// The Dockerfile with its `FROM` pointed at the current base tag: the
    /// recipe files say `FROM voyager-sim-base` so they stay readable.
    pub fn rendered_dockerfile(&self) -> Option<String> {
        match &self.kind {
            RecipeKind::Dockerfile { dockerfile, .. } => {
                Some(dockerfile.replace("FROM voyager-sim-base", &format!("FROM {}", base().tag())))
            }
            RecipeKind::Base { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_distinguishes_recipes() {
        assert_eq!(postgres().hash(), postgres().hash());
        assert_ne!(postgres().hash(), base().hash());
        assert_ne!(postgres().hash(), kafka().hash());
        assert_eq!(postgres().hash().len(), 12);
    }

    #[test]
    fn any_change_to_a_recipe_changes_its_tag() {
        let r = |dockerfile: &'static str, files: &'static [(&'static str, &'static str)], fetch| Recipe {
            name: "x",
            kind: RecipeKind::Dockerfile { dockerfile, files, fetch, embeds: &[] },
        };
        let base = r("FROM voyager-sim-base\n", &[("a.sh", "echo a")], None);
        let variants = [
            r("FROM voyager-sim-base\nRUN true\n", &[("a.sh", "echo a")], None),
            r("FROM voyager-sim-base\n", &[("a.sh", "echo b")], None),
            r("FROM voyager-sim-base\n", &[("b.sh", "echo a")], None),
            r("FROM voyager-sim-base\n", &[("a.sh", "echo a")], Some(Fetch::Maven("<project/>"))),
        ];
        for v in variants {
            assert_ne!(v.tag(), base.tag(), "{v:?}");
        }
        assert_eq!(base.tag(), r("FROM voyager-sim-base\n", &[("a.sh", "echo a")], None).tag());
    }

    #[test]
    fn dockerfiles_build_on_the_hashed_base() {
        for r in [postgres(), kafka()] {
            let df = r.rendered_dockerfile().unwrap();
            assert!(df.starts_with(&format!("FROM {}\n", base().tag())), "{df}");
        }
    }
}
