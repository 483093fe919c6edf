//! Programs built from Go modules on the host, for the offline Kubernetes
//! images: the host's Go toolchain, its module proxy settings and its build
//! cache (all outside any clone, so a second machine-wide build is fast),
//! and our own cache of the finished programs, keyed by the build's hash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::build::{cache_home, ImageError};
use super::recipe::GoBuild;
use crate::progress::Progress;

/// The directory an earlier build left `build`'s outputs in, if complete.
pub fn cached(build: &GoBuild) -> Option<PathBuf> {
    let dir = cache_dir(build);
    build.outputs().iter().all(|o| dir.join(o).is_file()).then_some(dir)
}

fn cache_dir(build: &GoBuild) -> PathBuf {
    cache_home().join("voyager-sim").join("go").join(format!("{}-{}", build.name, build.hash()))
}

/// The directory holding the build's outputs, building them first unless an
/// earlier build left them complete.
pub async fn programs(build: &GoBuild, progress: &Progress) -> Result<PathBuf, ImageError> {
    let dir = cache_dir(build);
    if cached(build).is_some() {
        progress.say(&format!("{}: programs cached in {}", build.name, dir.display()));
        return Ok(dir);
    }
    check_go(build).await?;
    let parent = dir.parent().expect("a cache directory has a parent");
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let work =
        parent.join(format!(".{}-{}-{}", build.name, std::process::id(), crate::runtime::labels::random_suffix()));
    let result = build_in(build, &work, progress).await;
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    // Complete outputs only ever appear under the cache name.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(work.join("out"), &dir).map_err(io(format!(
        "moving the {} build into {}",
        build.name,
        dir.display()
    )))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(dir)
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// `go version` says `go version go1.26.8 linux/amd64`.
pub fn parse_go_version(text: &str) -> Option<(u32, u32)> {
    let v = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("go"))
        .find(|v| v.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

async fn check_go(build: &GoBuild) -> Result<(), ImageError> {
    let (major, minor) = build.min_go;
    let need = format!("Go {major}.{minor} or later");
    let out = tokio::process::Command::new("go").arg("version").output().await;
    let found = match out {
        Ok(o) if o.status.success() => parse_go_version(&String::from_utf8_lossy(&o.stdout)),
        _ => None,
    };
    match found {
        Some(v) if v >= (major, minor) => Ok(()),
        Some((a, b)) => Err(ImageError::Toolchain {
            what: build.name,
            message: format!("this host's Go is {a}.{b}; building {} needs {need}", build.name),
        }),
        None => Err(ImageError::Toolchain {
            what: build.name,
            message: format!("no `go` command on PATH; building {} needs {need}", build.name),
        }),
    }
}

fn go_command(work: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("go");
    c.current_dir(work)
        .env("CGO_ENABLED", "0")
        // go.sum pins every module; nothing may be added or changed here.
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .stdin(Stdio::null());
    c
}

async fn build_in(build: &GoBuild, work: &Path, progress: &Progress) -> Result<(), ImageError> {
    std::fs::create_dir_all(work.join("out")).map_err(io(format!("creating {}", work.display())))?;
    for (path, body) in build.files {
        std::fs::write(work.join(path), body).map_err(io(format!("writing {path}")))?;
    }
    let name = build.name;
    progress.say(&format!("{name}: resolving Go modules (kept in Go's module cache after the first time)"));
    let listed = go_command(work)
        .args(["list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"])
        .args(build.packages)
        .output()
        .await
        .map_err(io("running `go list`"))?;
    if !listed.status.success() {
        return Err(tool_failure(name, "Go could not resolve the modules", "go list -deps", &listed.stderr));
    }
    let total = String::from_utf8_lossy(&listed.stdout).lines().filter(|l| !l.is_empty()).count();
    progress.say(&format!("{name}: compiling {total} packages (Go's build cache makes later builds fast)"));

    let ldflags = build.ldflags.join(" ");
    let mut child = go_command(work)
        .args(["build", "-v", "-trimpath", "-ldflags", &ldflags, "-o", "out/"])
        .args(build.packages)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io("starting `go build`"))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let started = Instant::now();
    let mut compiled = 0usize;
    let mut tail: Vec<String> = vec![];
    let mut last_said = Instant::now();
    let mut last_pct = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.map_err(io("reading `go build` output"))? else { break };
                if line.starts_with('#') || line.contains(' ') || line.contains(':') {
                    tail.push(line);
                    if tail.len() > 30 {
                        tail.remove(0);
                    }
                    continue;
                }
                compiled += 1;
                let pct = (compiled * 100 / total.max(1)).min(100);
                if pct >= last_pct + 10 {
                    last_pct = pct - pct % 10;
                    last_said = Instant::now();
                    progress.say(&format!("{name}: {pct}% of packages compiled ({compiled}/{total}, {:.0}s)", started.elapsed().as_secs_f64()));
                }
            }
            _ = tick.tick() => {
                if last_said.elapsed() >= Duration::from_secs(55) {
                    progress.say(&format!("{name}: still compiling and linking ({:.0}s so far)", started.elapsed().as_secs_f64()));
                }
            }
        }
    }
    let status = child.wait().await.map_err(io("waiting for `go build`"))?;
    if !status.success() {
        return Err(ImageError::Build {
            tag: name.to_string(),
            message: format!("`go build` of {} failed", build.packages.join(" ")),
            tail: tail.join("\n"),
        });
    }
    for (module, path, out, flags) in build.c_programs {
        let dir = go_command(work)
            .args(["list", "-m", "-f", "{{.Dir}}", module])
            .output()
            .await
            .map_err(io("running `go list -m`"))?;
        if !dir.status.success() {
            return Err(tool_failure(name, "Go could not find the module", "go list -m", &dir.stderr));
        }
        let source = PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim()).join(path);
        let mut args: Vec<String> = vec!["-Os".into(), "-static".into(), "-s".into()];
        args.extend(flags.split_whitespace().map(str::to_string));
        args.extend(["-o".into(), work.join("out").join(out).display().to_string(), source.display().to_string()]);
        let cc = tokio::process::Command::new("gcc")
            .args(&args)
            .output()
            .await
            .map_err(|_| ImageError::MissingTool { tool: "gcc", package: "build-essential" })?;
        if !cc.status.success() {
            return Err(tool_failure(name, "gcc could not compile a program of the module", "gcc", &cc.stderr));
        }
    }
    for o in build.outputs() {
        if !work.join("out").join(&o).is_file() {
            return Err(ImageError::Build {
                tag: name.to_string(),
                message: format!("the build ended without producing {o}"),
                tail: tail.join("\n"),
            });
        }
    }
    progress.say(&format!("{name}: built in {:.0}s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn tool_failure(name: &str, message: &str, command: &str, stderr: &[u8]) -> ImageError {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    ImageError::Build {
        tag: name.to_string(),
        message: format!("{message} (`{command}`)"),
        tail: lines[lines.len().saturating_sub(20)..].join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_versions() {
        assert_eq!(parse_go_version("go version go1.26.8 linux/amd64"), Some((1, 26)));
        assert_eq!(parse_go_version("go version go1.24rc1 linux/amd64"), Some((1, 24)));
        assert_eq!(parse_go_version("bash: go: not found"), None);
    }
}
