//! voyager-netagent: the stack's link agent. voyager-sim runs it as a
//! container on the host's network to delay packets between AZs, because
//! the kernels it targets may have no netem: the firewall hands matching
//! packets to an NFQUEUE and this process lets each one go after its delay.
//! It also carries the round-trip probe the harness uses to measure what a
//! link's delay really is.
//!
//! Layout: `nfqueue` speaks the kernel's queue protocol, `delay` holds and
//! releases packets, `probe` is the UDP echo server and pinger.
//!
//! It shares nothing with the harness but its command line and stdout lines
//! (`bound queue N`, `rtt_us N`), so it stays a small, dependency-free binary
//! that any Debian-based image can run.

mod delay;
mod nfqueue;
mod probe;

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage:
  voyager-netagent delay --queue-from N [--delay-us N] [--jitter-us N] [--seed N]
      bind the first free NFQUEUE at or above N, print `bound queue Q`, and
      release every queued packet after delay ± uniform jitter (µs)
  voyager-netagent echo --listen ADDR
      UDP echo server
  voyager-netagent ping --target ADDR [--count N] [--interval-ms N] [--timeout-ms N]
      UDP round trips to an echo server, one `rtt_us N` line each, then a summary
  voyager-netagent sink --listen ADDR
      TCP server that reads each connection to its end and answers the byte count
  voyager-netagent send --target ADDR --bytes N
      send N bytes to a sink, print `throughput_kbit N elapsed_us N`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("delay") => Flags::parse(&args[1..], &["queue-from", "delay-us", "jitter-us", "seed"]).and_then(|f| {
            let cfg = delay::Config {
                queue_from: f.num("queue-from", None)? as u16,
                delay: Duration::from_micros(f.num("delay-us", Some(0))?),
                jitter: Duration::from_micros(f.num("jitter-us", Some(0))?),
                seed: f.num("seed", Some(0x5eed))?,
            };
            delay::run(cfg)
        }),
        Some("echo") => Flags::parse(&args[1..], &["listen"]).and_then(|f| probe::echo(&f.text("listen")?)),
        Some("ping") => Flags::parse(&args[1..], &["target", "count", "interval-ms", "timeout-ms"]).and_then(|f| {
            probe::ping(
                &f.text("target")?,
                f.num("count", Some(100))?,
                Duration::from_millis(f.num("interval-ms", Some(10))?),
                Duration::from_millis(f.num("timeout-ms", Some(1000))?),
            )
        }),
        Some("sink") => Flags::parse(&args[1..], &["listen"]).and_then(|f| probe::sink(&f.text("listen")?)),
        Some("send") => Flags::parse(&args[1..], &["target", "bytes"])
            .and_then(|f| probe::send(&f.text("target")?, f.num("bytes", None)?)),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("expected a command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voyager-netagent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs, checked against the names a command takes.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Flags, String> {
        let mut out = vec![];
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a.strip_prefix("--").filter(|n| known.contains(n)).ok_or_else(|| {
                format!(
                    "unknown argument `{a}`; this command takes {}",
                    known.iter().map(|k| format!("--{k}")).collect::<Vec<_>>().join(", ")
                )
            })?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_string(), value.clone()));
        }
        Ok(Flags(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> Result<String, String> {
        self.get(name).map(str::to_string).ok_or_else(|| format!("--{name} is required"))
    }

    fn num(&self, name: &str, default: Option<u64>) -> Result<u64, String> {
        match (self.get(name), default) {
            (Some(v), _) => v.parse().map_err(|_| format!("--{name} `{v}` is not a whole number")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("--{name} is required")),
        }
    }
}
