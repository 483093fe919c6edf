//! The workspace's companion binaries (the link agent today; the Auth0 mock
//! and the Vault-API server run the same way): found on this host and
//! mounted read-only into a plain Debian container, so they need no image
//! of their own and are never stale.

use std::path::{Path, PathBuf};

/// A companion binary of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Companion {
    /// The binary's file name, which is also its cargo `[[bin]]` name.
    pub binary: &'static str,
    /// The variable that overrides where it is found.
    pub env: &'static str,
    /// The workspace package that builds it.
    pub package: &'static str,
}

pub const NETAGENT: Companion =
    Companion { binary: "voyager-netagent", env: "VOYAGER_NETAGENT", package: "voyager-netagent" };

pub const AUTH0: Companion = Companion { binary: "voyager-auth0", env: "VOYAGER_AUTH0", package: "auth0-mock" };

pub const VAULT: Companion = Companion { binary: "voyager-vault", env: "VOYAGER_VAULT", package: "vault-lite" };

/// The simulator itself, run inside the stack as its always-on control
/// plane (`voyager-sim control`).
pub const SIM: Companion = Companion { binary: "voyager-sim", env: "VOYAGER_SIM", package: "voyager-sim" };

/// Where companion binaries are mounted inside their containers.
pub fn mount_point(c: Companion) -> String {
    format!("/usr/local/bin/{}", c.binary)
}

impl Companion {
    /// The binary's path: the override variable, else next to this
    /// executable (cargo puts a workspace's binaries side by side; test
    /// executables sit one level down, in `deps/`), else on `PATH`.
    pub fn locate(&self) -> Result<PathBuf, String> {
        if let Ok(p) = std::env::var(self.env) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{}={} is not a file; point it at the built {} binary", self.env, p.display(), self.binary))
            };
        }
        let exe = std::env::current_exe().ok();
        let near = exe.iter().flat_map(|e| e.ancestors().skip(1).take(2)).map(Path::to_path_buf);
        let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
        near.chain(on_path)
            .map(|dir| dir.join(self.binary))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "the {} binary was not found next to {} or on PATH; build it with `cargo build -p {}` (scripts/test and scripts/demo do), or set {} to its path",
                    self.binary,
                    exe.map(|e| e.display().to_string()).unwrap_or_else(|| "this program".into()),
                    self.package,
                    self.env
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let c = Companion { binary: "voyager-no-such-binary", env: "VOYAGER_NO_SUCH_BINARY", package: "nothing" };
        let err = c.locate().unwrap_err();
        assert!(err.contains("cargo build -p nothing"), "{err}");
        assert!(err.contains("VOYAGER_NO_SUCH_BINARY"), "{err}");
    }
}
