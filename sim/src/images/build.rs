//! Building the offline image set: a Debian base from `debootstrap` imported
//! into Docker, then one image per service on top. Built images are found by
//! tag next time, so a warm machine builds nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::recipe::{self, Recipe, RecipeKind, SUITE};
use crate::progress::Progress;
use crate::runtime::lock::FileLock;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot find a Debian mirror for debootstrap in the host's apt sources ({searched}); set VOYAGER_DEBIAN_MIRROR to a mirror URL")]
    NoMirror { searched: String },
    #[error("`{tool}` is not installed; install it with `apt-get install -y {package}`")]
    MissingTool { tool: &'static str, package: &'static str },
    #[error("building the offline base needs root (debootstrap creates device nodes and chroots); run as root or use `--images upstream`")]
    NotRoot,
    #[error("debootstrap of {suite} from {mirror} failed (exit {code}):\n{tail}")]
    Debootstrap { suite: &'static str, mirror: String, code: i32, tail: String },
    #[error("importing the base image {tag} failed: {message}")]
    Import { tag: String, message: String },
    #[error("building image {tag} failed: {message}\n{tail}")]
    Build { tag: String, message: String, tail: String },
    #[error("image {image} is not present and could not be pulled: {message}\n  help: use `--images offline` (built locally with `voyager-sim images build`)")]
    Pull { image: String, message: String },
    #[error("cannot build {what} offline: {message}\n  help: install a Go toolchain of that release or later (Debian 12's golang-go is too old), or use `--images upstream`")]
    Toolchain { what: &'static str, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What happened to one image.
#[derive(Debug, Clone)]
pub struct ImageOutcome {
    pub tag: String,
    pub built: bool,
    pub elapsed: Duration,
}

pub async fn image_exists(docker: &Docker, tag: &str) -> bool {
    docker.inspect_image(tag).await.is_ok()
}

/// Make sure every given offline recipe (and the base under it) is present,
/// building what is missing. Holds a machine-wide lock while it looks, so
/// parallel test processes build each image once instead of racing.
pub async fn ensure_offline(
    docker: &Docker,
    recipes: &[Recipe],
    progress: &Progress,
) -> Result<Vec<ImageOutcome>, ImageError> {
    let _lock = FileLock::acquire(&std::env::temp_dir().join("voyager-sim-images.lock"), progress, "image build")
        .await
        .map_err(io("taking the image build lock"))?;
    let mut out = vec![];
    let base = recipe::base();
    // Every offline image builds on the base.
    if !recipes.is_empty() {
        out.push(ensure_one(docker, &base, progress).await?);
    }
    for r in recipes.iter().filter(|r| r.name != "base") {
        out.push(ensure_one(docker, r, progress).await?);
    }
    Ok(out)
}

fn ensure_one<'a>(
    docker: &'a Docker,
    recipe: &'a Recipe,
    progress: &'a Progress,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ImageOutcome, ImageError>> + Send + 'a>> {
    Box::pin(async move {
        let tag = recipe.tag();
        let start = Instant::now();
        if image_exists(docker, &tag).await {
            progress.say(&format!("image {tag}: cached"));
            return Ok(ImageOutcome { tag, built: false, elapsed: start.elapsed() });
        }
        progress.say(&format!("image {tag}: building"));
        match &recipe.kind {
            RecipeKind::Base { include } => build_base(docker, &tag, include, progress).await?,
            RecipeKind::Dockerfile { files, fetch, embeds, .. } => {
                let dockerfile = recipe.rendered_dockerfile().expect("dockerfile recipe");
                let libs = match fetch {
                    Some(recipe::Fetch::Maven(pom)) => maven_libs(recipe.name, pom, progress).await?,
                    Some(recipe::Fetch::Pip { requirements, uploaded_before, exempt }) => {
                        pip_wheels(recipe.name, requirements, uploaded_before, exempt, progress).await?
                    }
                    Some(recipe::Fetch::Go { build, take }) => {
                        let dir = super::gobuild::programs(build, progress).await?;
                        let mut libs = vec![];
                        for t in *take {
                            let p = dir.join(t);
                            libs.push((
                                t.to_string(),
                                std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?,
                            ));
                        }
                        libs
                    }
                    None => vec![],
                };
                let mut images = vec![];
                for e in *embeds {
                    let inner = (e.recipe)();
                    ensure_one(docker, &inner, progress).await?;
                    progress.say(&format!("{}: saving {} as {}", recipe.name, inner.tag(), e.reference));
                    images.push((e.file.to_string(), save_as(docker, &inner.tag(), e.reference).await?));
                }
                build_dockerfile(docker, &tag, &dockerfile, files, &libs, &images, progress).await?
            }
        }
        let elapsed = start.elapsed();
        progress.say(&format!("image {tag}: built in {:.1}s", elapsed.as_secs_f64()));
        Ok(ImageOutcome { tag, built: true, elapsed })
    })
}

/// `docker save` of an image under another reference: tagged for the
/// moment, saved, and the extra tag removed again, so the host keeps only
/// our own tags.
pub async fn save_as(docker: &Docker, tag: &str, reference: &str) -> Result<Vec<u8>, ImageError> {
    let (repo, version) = reference.rsplit_once(':').expect("an image reference has a tag");
    let opts = bollard::query_parameters::TagImageOptionsBuilder::new().repo(repo).tag(version).build();
    docker.tag_image(tag, Some(opts)).await?;
    let mut out = vec![];
    let mut stream = docker.export_image(reference);
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let untag = bollard::query_parameters::RemoveImageOptionsBuilder::new().noprune(true).build();
    let _ = docker.remove_image(reference, Some(untag), None).await;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Where per-user caches go: `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

/// Pull an upstream image unless it is already here.
pub async fn ensure_upstream(docker: &Docker, image: &str, progress: &Progress) -> Result<ImageOutcome, ImageError> {
    let start = Instant::now();
    if image_exists(docker, image).await {
        return Ok(ImageOutcome { tag: image.to_string(), built: false, elapsed: start.elapsed() });
    }
    progress.say(&format!("image {image}: pulling"));
    let opts = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut stream = docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| ImageError::Pull { image: image.to_string(), message: e.to_string() })?;
    }
    Ok(ImageOutcome { tag: image.to_string(), built: true, elapsed: start.elapsed() })
}

/// The Debian mirror for debootstrap: `VOYAGER_DEBIAN_MIRROR`, else the first
/// `deb` source for the suite in the host's apt configuration, so the project
/// names no mirror of its own.
pub fn debian_mirror() -> Result<String, ImageError> {
    if let Ok(m) = std::env::var("VOYAGER_DEBIAN_MIRROR") {
        if !m.trim().is_empty() {
            return Ok(m.trim().to_string());
        }
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        extra.sort();
        files.extend(extra);
    }
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let deb822 = f.extension().is_some_and(|e| e == "sources");
        if let Some(m) = mirror_from_sources(&text, SUITE, deb822) {
            return Ok(m);
        }
    }
    Err(ImageError::NoMirror { searched: files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") })
}

/// Find the URI of a `deb` source that carries `suite` with component `main`,
/// in one-line (`sources.list`) or deb822 (`*.sources`) form.
pub fn mirror_from_sources(text: &str, suite: &str, deb822: bool) -> Option<String> {
    if !deb822 {
        return text.lines().find_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
            if words.next()? != "deb" {
                return None;
            }
            let uri = words.next()?;
            let s = words.next()?;
            let comps: Vec<&str> = words.collect();
            (s == suite && comps.contains(&"main")).then(|| uri.to_string())
        });
    }
    text.split("\n\n").find_map(|stanza| {
        let mut fields: HashMap<String, String> = HashMap::new();
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let has = |k: &str, want: &str| fields.get(k).is_some_and(|v| v.split_whitespace().any(|w| w == want));
        if has("types", "deb")
            && has("suites", suite)
            && has("components", "main")
            && fields.get("enabled").is_none_or(|v| v != "no")
        {
            fields.get("uris")?.split_whitespace().next().map(str::to_string)
        } else {
            None
        }
    })
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
}

async fn build_base(docker: &Docker, tag: &str, include: &[&str], progress: &Progress) -> Result<(), ImageError> {
    if !which("debootstrap") {
        return Err(ImageError::MissingTool { tool: "debootstrap", package: "debootstrap" });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ImageError::NotRoot);
    }
    let mirror = debian_mirror()?;
    let work = tempfile_dir()?;
    let root = work.join("rootfs");
    progress.say(&format!("debootstrap {SUITE} (minbase) from {mirror}"));
    let mut child = tokio::process::Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", include.join(",")))
        .arg(SUITE)
        .arg(&root)
        .arg(&mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io("starting debootstrap"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut tail: Vec<String> = vec![];
    let mut fetched = 0;
    while let Some(line) = lines.next_line().await.map_err(io("reading debootstrap output"))? {
        if line.starts_with("I: Retrieving") {
            fetched += 1;
            if fetched % 25 == 0 {
                progress.say(&format!("debootstrap: {fetched} packages fetched"));
            }
        } else if line.starts_with("I: Base system installed") {
            progress.say(&format!("debootstrap: {}", line.trim_start_matches("I: ")));
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err).await.ok();
    let status = child.wait().await.map_err(io("waiting for debootstrap"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&work);
        tail.extend(err.lines().map(str::to_string));
        return Err(ImageError::Debootstrap {
            suite: SUITE,
            mirror,
            code: status.code().unwrap_or(-1),
            tail: tail.join("\n"),
        });
    }
    // apt's downloaded packages and lists are half the size and stale by the
    // time an image uses them; every recipe runs `apt-get update` itself.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    progress.say(&format!("importing {tag}"));
    let result = import_dir(docker, &root, tag).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn tempfile_dir() -> Result<PathBuf, ImageError> {
    let base = std::env::var_os("VOYAGER_BUILD_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir =
        base.join(format!("voyager-sim-build-{}-{}", std::process::id(), crate::runtime::labels::random_suffix()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// `tar -C root -c . > file`, then `docker import` of that file, streamed: the
/// root file system is a few hundred MB and need not sit in memory. The
/// tarball is finished and checked before Docker sees a byte, so a failed tar
/// can never leave a truncated image under a good tag.
async fn import_dir(docker: &Docker, root: &Path, tag: &str) -> Result<(), ImageError> {
    let (repo, version) = tag.rsplit_once(':').expect("tag has a version");
    let tarball = root.with_extension("tar");
    let out = tokio::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .output()
        .await
        .map_err(io("starting tar"))?;
    if !out.status.success() {
        return Err(ImageError::Import {
            tag: tag.to_string(),
            message: format!("tar failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let file = tokio::fs::File::open(&tarball).await.map_err(io(format!("opening {}", tarball.display())))?;
    let chunks = futures_util::stream::unfold(file, |mut r| async move {
        let mut buf = vec![0u8; 1 << 20];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    });
    let opts = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(version).build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_try_stream(chunks)), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| ImageError::Import { tag: tag.to_string(), message: e.to_string() })?;
    }
    // An image under a cache tag is trusted forever after; make sure it holds
    // a file system before it gets that trust.
    let size = docker.inspect_image(tag).await.ok().and_then(|i| i.size).unwrap_or(0);
    if size < 10 << 20 {
        let _ = docker.remove_image(tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
        return Err(ImageError::Import {
            tag: tag.to_string(),
            message: format!("the imported image is only {size} bytes; the root file system did not arrive"),
        });
    }
    Ok(())
}

/// Resolve a pom's runtime dependencies with the host's Maven (its configured
/// repositories, nothing of ours) and return the jars as (file name, bytes).
async fn maven_libs(name: &str, pom: &str, progress: &Progress) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    if !which("mvn") {
        return Err(ImageError::MissingTool { tool: "mvn", package: "maven" });
    }
    let work = WorkDir::new()?;
    let pom_path = work.0.join("pom.xml");
    std::fs::write(&pom_path, pom).map_err(io("writing pom.xml"))?;
    progress.say(&format!("{name}: resolving jars with Maven (cached in ~/.m2 after the first time)"));
    let args: Vec<String> = [
        "-q".to_string(),
        "-B".into(),
        "-f".into(),
        pom_path.display().to_string(),
        "dependency:copy-dependencies".into(),
        format!("-DoutputDirectory={}", work.0.join("libs").display()),
        "-DincludeScope=runtime".into(),
    ]
    .into();
    run_tool(name, "Maven could not resolve the jars", "mvn", &args).await?;
    let libs = read_artifacts(&work.0.join("libs"))?;
    progress.say(&format!("{name}: {} jars resolved", libs.len()));
    Ok(libs)
}

/// A scratch directory for fetching artifacts, removed when dropped (on
/// every return path, errors included).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir, ImageError> {
        tempfile_dir().map(WorkDir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file in `dir` as (name, bytes), sorted by name: what goes into a
/// build context's `libs/`.
fn read_artifacts(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?.flatten() {
        let bytes = std::fs::read(e.path()).map_err(io(format!("reading {}", e.path().display())))?;
        out.push((e.file_name().to_string_lossy().into_owned(), bytes));
    }
    out.sort();
    Ok(out)
}

/// A pip new enough for `--uploaded-prior-to` (25.3), in a venv of our
/// own under the cache directory, made once from the host's Python.
async fn modern_pip(progress: &Progress) -> Result<std::path::PathBuf, ImageError> {
    let venv = cache_home().join("voyager-sim").join("pip-venv");
    let pip = venv.join("bin").join("pip");
    let fresh = async {
        let out = tokio::process::Command::new(&pip).args(["download", "--help"]).output().await.ok()?;
        String::from_utf8_lossy(&out.stdout).contains("--uploaded-prior-to").then_some(())
    };
    if fresh.await.is_some() {
        return Ok(pip);
    }
    if !which("python3") {
        return Err(ImageError::MissingTool { tool: "python3", package: "python3-venv" });
    }
    progress.say("making a venv with a current pip (for resolving as of a date)");
    let steps: [(&str, Vec<String>); 2] = [
        ("python3", vec!["-m".into(), "venv".into(), venv.display().to_string()]),
        (pip.to_str().unwrap_or("pip"), vec!["install".into(), "-q".into(), "--upgrade".into(), "pip>=25.3".into()]),
    ];
    for (cmd, args) in steps {
        run_tool("python packages", "could not make the pip venv", cmd, &args).await?;
    }
    Ok(pip)
}

/// Run a host tool; on failure, `message` and the last lines it printed.
async fn run_tool(what: &str, message: &str, cmd: &str, args: &[String]) -> Result<(), ImageError> {
    let out = tokio::process::Command::new(cmd).args(args).output().await.map_err(io(format!("running {cmd}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    Err(ImageError::Build {
        tag: what.to_string(),
        message: format!("{message} (`{cmd} {}`)", args.join(" ")),
        tail: lines[lines.len().saturating_sub(20)..].join("\n"),
    })
}

/// Build the wheels for `requirements` on the host, as of `uploaded_before`
/// (the exempt pins first, without their dependencies, so the resolver
/// finds them locally). pip's own cache makes a second build fast.
async fn pip_wheels(
    name: &str,
    requirements: &str,
    uploaded_before: &str,
    exempt: &[&str],
    progress: &Progress,
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let pip = modern_pip(progress).await?;
    let pip = pip.to_str().unwrap_or("pip");
    let work = WorkDir::new()?;
    let wheels = work.0.join("wheels");
    let reqs = work.0.join("requirements.txt");
    std::fs::write(&reqs, requirements).map_err(io("writing requirements.txt"))?;
    progress.say(&format!("{name}: building wheels with pip (cached after the first time)"));
    let w = wheels.display().to_string();
    for pin in exempt {
        let args: Vec<String> = ["wheel", "-q", "--no-deps", "--wheel-dir", &w, pin].map(String::from).into();
        run_tool(name, "pip could not build the pinned wheel", pip, &args).await?;
    }
    let args: Vec<String> = [
        "wheel",
        "-q",
        "--wheel-dir",
        &w,
        "--find-links",
        &w,
        "--uploaded-prior-to",
        uploaded_before,
        "-r",
        &reqs.display().to_string(),
    ]
    .map(String::from)
    .into();
    run_tool(name, "pip could not build the wheels", pip, &args).await?;
    let out = read_artifacts(&wheels)?;
    progress.say(&format!("{name}: {} wheels", out.len()));
    Ok(out)
}

/// An image of one of this workspace's programs on `base`, tagged by the
/// program's own hash, for a cluster that runs it (a pod cannot mount it
/// from the host as a container does). Built once per build of the program.
pub async fn program_image(
    docker: &Docker,
    base: &str,
    program: &str,
    path: &Path,
    progress: &Progress,
) -> Result<String, ImageError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    let hash = sha2::Sha256::digest(&bytes);
    let tag = format!("voyager-sim/{program}:{}", hex(&hash[..6]));
    if image_exists(docker, &tag).await {
        return Ok(tag);
    }
    progress.say(&format!("building the image {tag} ({:.0} MB program)", bytes.len() as f64 / 1e6));
    let dockerfile = format!(
        "FROM {base}\nCOPY libs/{program} /usr/local/bin/{program}\nUSER nobody\n\
         ENTRYPOINT [\"/usr/local/bin/{program}\"]\n"
    );
    build_dockerfile(docker, &tag, &dockerfile, &[], &[(program.to_string(), bytes)], &[], progress).await?;
    Ok(tag)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn build_dockerfile(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
    libs: &[(String, Vec<u8>)],
    images: &[(String, Vec<u8>)],
    progress: &Progress,
) -> Result<(), ImageError> {
    let context = build_context(dockerfile, files, libs, images).map_err(io("packing the build context"))?;
    let opts = BuildImageOptionsBuilder::new().dockerfile("Dockerfile").t(tag).rm(true).forcerm(true).build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
    let mut tail: Vec<String> = vec![];
    let short = tag.split(':').next().unwrap_or(tag).trim_start_matches("voyager-sim/");
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(s) = info.stream {
                    for line in s.lines().filter(|l| !l.trim().is_empty()) {
                        if line.starts_with("Step ") {
                            progress.say(&format!("{short}: {}", truncate(line, 100)));
                        }
                        tail.push(line.to_string());
                        if tail.len() > 30 {
                            tail.remove(0);
                        }
                    }
                }
            }
            Err(e) => {
                return Err(ImageError::Build { tag: tag.to_string(), message: e.to_string(), tail: tail.join("\n") })
            }
        }
    }
    if !image_exists(docker, tag).await {
        return Err(ImageError::Build {
            tag: tag.to_string(),
            message: "the build ended without producing the image".into(),
            tail: tail.join("\n"),
        });
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A tar archive of the Dockerfile, the recipe's files (scripts made
/// executable), any resolved artifacts under `libs/` (programs executable)
/// and embedded images under `images/`.
fn build_context(
    dockerfile: &str,
    files: &[(&str, &str)],
    libs: &[(String, Vec<u8>)],
    images: &[(String, Vec<u8>)],
) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, body: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, body)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for (path, body) in files {
        add(path, body.as_bytes(), if path.ends_with(".sh") { 0o755 } else { 0o644 })?;
    }
    for (lib, body) in libs {
        // Jars, wheels and programs: a program starts with an ELF header.
        let mode = if body.starts_with(b"\x7fELF") { 0o755 } else { 0o644 };
        add(&format!("libs/{lib}"), body, mode)?;
    }
    for (file, body) in images {
        add(&format!("images/{file}"), body, 0o644)?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_one_line_sources() {
        let text = "# comment\ndeb-src http://m.example/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main contrib\n";
        assert_eq!(mirror_from_sources(text, "bookworm", false).as_deref(), Some("http://m.example/debian"));
        assert_eq!(
            mirror_from_sources("deb http://s.example/debian-security bookworm-security main", "bookworm", false),
            None
        );
    }

    #[test]
    fn finds_the_mirror_in_deb822_sources() {
        let text = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://s.example/sec\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(mirror_from_sources(text, "bookworm", true).as_deref(), Some("http://m.example/debian"));
        let disabled = "Types: deb\nEnabled: no\nURIs: http://m.example/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(mirror_from_sources(disabled, "bookworm", true), None);
    }

    #[test]
    fn build_context_holds_the_dockerfile_and_executable_files() {
        let bytes = build_context(
            "FROM x\n",
            &[("entrypoint.sh", "#!/bin/sh\n"), ("log.properties", "x")],
            &[("a.jar".into(), vec![1, 2]), ("prog".into(), b"\x7fELF...".to_vec())],
            &[("pause.tar".into(), vec![3])],
        )
        .unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap())
            })
            .collect();
        let want = [
            ("Dockerfile", 0o644),
            ("entrypoint.sh", 0o755),
            ("log.properties", 0o644),
            ("libs/a.jar", 0o644),
            ("libs/prog", 0o755),
            ("images/pause.tar", 0o644),
        ];
        assert_eq!(entries, want.map(|(p, m)| (p.to_string(), m)).to_vec());
    }
}
