//! The commands that run load on a stack, `run` and `soak`: where the stack
//! comes from, healing on interrupt, and the reports written out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use voyager_sim::images::ImageSource;
use voyager_sim::report::Report;
use voyager_sim::{harness, Error, Progress, RunningStack, Sim};

use super::StackArgs;

/// How `run` and `soak` find their stack, time their scenarios and write
/// their reports.
#[derive(clap::Args, Clone)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Bring the stack up first and tear it down after (else it must be up)
    #[arg(long)]
    up: bool,
    /// Image set when --up starts the stack
    #[arg(long, default_value = "auto")]
    images: ImageSource,
    /// Multiply every scenario time by this (0.1 runs a 150 s scenario in 15 s;
    /// a soak's recovery bounds stay as they are)
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Where the JSON and HTML reports go
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
}

pub(crate) async fn run_scenario(
    file: &Path,
    args: &LoadArgs,
    junit: Option<&Path>,
    p: &Progress,
) -> Result<ExitCode, Error> {
    let LoadArgs { stack, up, images, time_scale, report_dir } = args;
    let (up, time_scale) = (*up, *time_scale);
    check_time_scale(time_scale)?;
    let text = std::fs::read_to_string(file)
        .map_err(|source| Error::ReadStack { file: file.display().to_string(), source })?;
    let scenario = voyager_sim::scenario::parse_scenario(file, &text)?;
    let mut running = acquire(stack, up, *images, p).await?;
    let opts = voyager_sim::runner::RunOptions { time_scale, ..Default::default() };
    let report =
        interruptible(&mut running, up, p, |st| async move { voyager_sim::runner::run(st, &scenario, &opts, p).await })
            .await?;
    let (json, html) = write_report(&report, report_dir)?;
    print!("{}", report.summary());
    println!("report: {} and {}", json.display(), html.display());
    if let Some(junit) = junit {
        if let Some(dir) = junit.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::State { path: dir.display().to_string(), source })?;
        }
        std::fs::write(junit, report.junit())
            .map_err(|source| Error::State { path: junit.display().to_string(), source })?;
        println!("JUnit XML: {}", junit.display());
    }
    if up {
        running.shutdown().await?;
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The stack a run or soak acts on: started for it with `--up`, else the
/// one already up.
pub(crate) async fn acquire(
    args: &StackArgs,
    up: bool,
    images: ImageSource,
    p: &Progress,
) -> Result<RunningStack, Error> {
    if up {
        let mut sim = Sim::new(args.load()?).with_images(images).with_progress(p.clone());
        if let Some(n) = &args.name {
            sim = sim.with_name(n.clone());
        }
        return sim.start().await;
    }
    let name = args.name()?;
    RunningStack::attach(&name, p).await.map_err(|_| {
        Error::usage(
            format!("stack `{name}` is not up"),
            "start it with `voyager-sim up`, or pass --up to start it for this run",
        )
    })
}

/// Run `work` on the stack; on Ctrl-C, SIGTERM or an error, heal every
/// fault it put in force (and remove a stack started for it) before
/// returning, so no fault outlives the command.
async fn interruptible<'a, T, F, Fut>(
    running: &'a mut RunningStack,
    up: bool,
    p: &Progress,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(&'a mut RunningStack) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + 'a,
{
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::usage(e.to_string(), "signal setup failed"))?;
    let name = running.name().to_string();
    let outcome = tokio::select! {
        r = work(running) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    let heal = || async {
        let mut st = RunningStack::attach(&name, p).await?;
        st.heal(std::time::Duration::from_secs(180)).await?;
        Ok::<_, Error>(st)
    };
    match outcome {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => {
            let _ = heal().await;
            Err(e)
        }
        None => {
            p.say("interrupted; healing every fault of this run");
            let healed = heal().await;
            if up {
                let _ = harness::down_interrupted(&name, p).await;
            }
            healed?;
            Err(Error::Interrupted)
        }
    }
}

fn check_time_scale(time_scale: f64) -> Result<(), Error> {
    if !(time_scale > 0.0 && time_scale.is_finite()) {
        return Err(Error::usage(
            format!("--time-scale {time_scale} is not a factor"),
            "use a positive number, such as 0.1 or 1",
        ));
    }
    Ok(())
}

/// A scenario report as JSON and HTML in `dir`, named after the scenario.
fn write_report(report: &Report, dir: &std::path::Path) -> Result<(PathBuf, PathBuf), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::State { path: dir.display().to_string(), source })?;
    let base = dir.join(&report.scenario);
    let (json, html) = (base.with_extension("json"), base.with_extension("html"));
    std::fs::write(&json, serde_json::to_string_pretty(report).expect("serializable"))
        .map_err(|source| Error::State { path: json.display().to_string(), source })?;
    std::fs::write(&html, report.html()).map_err(|source| Error::State { path: html.display().to_string(), source })?;
    Ok((json, html))
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "PASSED"
    } else {
        "FAILED"
    }
}

/// `soak`: the cycles of a seed, each cycle's report written as it ends,
/// then a line per cycle and the soak's JSON.
pub(crate) async fn soak(
    seed: u64,
    cycles: u32,
    cycle: Option<u32>,
    args: &LoadArgs,
    p: &Progress,
) -> Result<ExitCode, Error> {
    let LoadArgs { stack, up, images, time_scale, report_dir } = args;
    let (up, time_scale) = (*up, *time_scale);
    if cycles == 0 {
        return Err(Error::usage("--cycles 0 runs nothing", "ask for one cycle or more"));
    }
    check_time_scale(time_scale)?;
    let mut running = acquire(stack, up, *images, p).await?;
    let opts = voyager_sim::runner::soak::SoakOptions {
        seed,
        cycles,
        only: cycle,
        run: voyager_sim::runner::RunOptions { time_scale, ..Default::default() },
        settle_within: voyager_sim::runner::soak::SETTLE_WITHIN,
    };
    let (opts, pr, dir) = (&opts, p, report_dir);
    let r = interruptible(&mut running, up, p, |st| async move {
        voyager_sim::runner::soak::soak(st, opts, pr, |report, c| {
            let p = pr;
            match report.map(|r| write_report(r, dir)) {
                Some(Ok((json, _))) => p.say(&format!("cycle {}: {} ({})", c.cycle, verdict(c.passed), json.display())),
                Some(Err(e)) => p.say(&format!("cycle {}: report not written: {e}", c.cycle)),
                None => p.say(&format!("cycle {}: {}", c.cycle, verdict(c.passed))),
            }
            if !c.passed {
                for problem in &c.problems {
                    p.say(&format!("  {problem}"));
                }
                p.say(&format!("  replay it alone: {}", c.replay));
            }
        })
        .await
    })
    .await?;
    std::fs::create_dir_all(report_dir)
        .map_err(|source| Error::State { path: report_dir.display().to_string(), source })?;
    let path = report_dir.join(format!("soak-{seed}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&r).expect("serializable"))
        .map_err(|source| Error::State { path: path.display().to_string(), source })?;
    println!("soak seed {seed}: {}", verdict(r.passed));
    for c in &r.cycles {
        let rto: Vec<String> = c
            .recovery_s
            .iter()
            .map(|(t, s)| format!("{t} {}", s.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())))
            .collect();
        println!(
            "  cycle {:>3} {:<6} {} for {:.0}s: acked {}, lost {}, dup {}, ambiguous {}; RTO {}; settled {}",
            c.cycle,
            verdict(c.passed),
            c.fault,
            c.fault_s,
            c.acknowledged,
            c.lost,
            c.duplicated,
            c.ambiguous,
            rto.join(", "),
            c.settled_s.map(|s| format!("in {s:.1}s")).unwrap_or_else(|| "never".into())
        );
        if !c.passed {
            println!("      replay: {}", c.replay);
        }
    }
    println!("report: {}", path.display());
    if up {
        running.shutdown().await?;
    }
    Ok(if r.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
