//! The real binary, run in a temp dir or on the data files in `stack_files/`:
//! stdout, stderr and exit status compared with what a user should see.
//! These need no Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voyager-sim"));
    c.env_remove("VOYAGER_SIM_STACK_FILE");
    c
}

fn files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stack_files")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Each `stack_files/NAME.toml` is checked with `voyager-sim check`; what it
/// prints must equal `NAME.expected` (exit code, then stdout and stderr).
/// `UPDATE_EXPECT=1` rewrites the expectations, to be reviewed in the diff.
#[test]
fn stack_files_give_the_expected_messages() {
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(files()).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let mut failures = vec![];
    for path in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let out = bin().current_dir(files()).args(["check", "--stack", name]).output().unwrap();
        let got = format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr)
        );
        let expected_path = path.with_extension("expected");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if got != want {
            failures.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} stack files found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_file_exits_2_and_names_file_line_and_column() {
    for e in std::fs::read_dir(files()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".toml") || name.starts_with("good_") {
            continue;
        }
        let out = bin().current_dir(files()).args(["check", "--stack", &name]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = text(&out.stderr);
        let loc = err.trim_start_matches("error: ").split(": ").next().unwrap();
        let parts: Vec<&str> = loc.split(':').collect();
        assert_eq!(parts.len(), 3, "{name}: no file:line:col in {err}");
        assert_eq!(parts[0], name);
        assert!(parts[1].parse::<usize>().unwrap() >= 1 && parts[2].parse::<usize>().unwrap() >= 1, "{err}");
        assert!(err.contains("help: "), "{name}: no help in {err}");
    }
}

#[test]
fn a_missing_stack_file_says_so_and_exits_2() {
    let out = bin().args(["check", "--stack", "/nonexistent/voyager.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read stack file /nonexistent/voyager.toml"), "{}", text(&out.stderr));
}

#[test]
fn without_a_stack_file_the_builtin_production_stack_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().current_dir(dir.path()).arg("check").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for line in [
        "VPC 10.0.0.0/16",
        "az a: private 10.0.1.0/24, public 10.0.101.0/24",
        "az c: private 10.0.3.0/24, public 10.0.103.0/24",
        "postgres-a",
    ] {
        assert!(s.contains(line), "missing {line:?} in {s}");
    }
}

#[test]
fn only_with_an_undeclared_or_unknown_service_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = |only: &str| -> Output {
        bin()
            .current_dir(dir.path())
            .env("VOYAGER_SIM_HOME", dir.path())
            .args(["up", "--only", only, "--images", "offline"])
            .output()
            .unwrap()
    };
    let out = run("kafak");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "--only: unknown service `kafak`; known services: alb, api, auth0, influxdb, kafka, kubernetes, nlb, postgres, prometheus, route53, s3, vault"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = run(",");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--only names no service"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_image_set_is_rejected_by_the_argument_parser() {
    let out = bin().args(["up", "--images", "newest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown image set `newest`; use auto, offline or upstream"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_and_env_of_a_stack_that_is_not_up_explain_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [&["status"][..], &["env"], &["heal"], &["fault", "kill", "postgres-a"], &["failover", "postgres"]] {
        let out =
            bin().env("VOYAGER_SIM_HOME", dir.path()).args(cmd).args(["--name", "nothing-here"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let err = text(&out.stderr);
        assert!(err.contains("stack `nothing-here` is not up") && err.contains("voyager-sim up"), "{cmd:?}: {err}");
    }
}

#[test]
fn an_invalid_stack_name_is_rejected_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("VOYAGER_SIM_HOME", dir.path())
        .args(["up", "--name", "Bad_Name", "--images", "offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("stack name `Bad_Name` is not usable"), "{}", text(&out.stderr));
}
