//! The VPC's local route. Docker isolates bridge networks from each other and
//! masquerades traffic leaving a bridge; a VPC does neither between its
//! subnets. Two host firewall rules per stack undo both for the VPC's range,
//! so a packet from 10.0.2.x reaches 10.0.1.x with its source address intact.
//! Rules carry a comment naming the stack, which is how they are swept.

use super::RuntimeError;
use crate::progress::Progress;
use crate::stack::Cidr;

fn comment(stack: &str) -> String {
    format!("voyager-sim:{stack}")
}

/// Fault rules carry their own tag, so `heal` can remove them and leave the
/// VPC's route; `down` removes both.
fn fault_comment(stack: &str) -> String {
    format!("voyager-sim:{stack}:fault")
}

/// The rules for one stack, as (table, chain, rule arguments).
pub fn rules(stack: &str, vpc: Cidr) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let base = |target: &str| -> Vec<String> {
        ["-s", &vpc.to_string(), "-d", &vpc.to_string(), "-m", "comment", "--comment", &comment(stack), "-j", target]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    vec![("filter", "DOCKER-USER", base("ACCEPT")), ("nat", "POSTROUTING", base("RETURN"))]
}

fn iptables_available() -> bool {
    cfg!(target_os = "linux")
        && ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
}

async fn run(args: &[String]) -> Result<String, RuntimeError> {
    super::host_tool("iptables", args, "apt-get install -y iptables").await
}

pub async fn install(stack: &str, vpc: Cidr, progress: &Progress) -> Result<(), RuntimeError> {
    if !iptables_available() {
        progress.say("warning: no iptables on this host; subnets of the VPC cannot reach each other (only containers in the same subnet can)");
        return Ok(());
    }
    remove(stack).await?;
    for (table, chain, rule) in rules(stack, vpc) {
        let mut args = vec!["-w".to_string(), "-t".into(), table.into(), "-I".into(), chain.into(), "1".into()];
        args.extend(rule);
        run(&args).await?;
    }
    Ok(())
}

/// Delete every rule carrying this stack's comment (none is fine).
pub async fn remove(stack: &str) -> Result<(), RuntimeError> {
    if !iptables_available() {
        return Ok(());
    }
    // Another process may be deleting the same rules (a `down` racing the
    // orphan sweep of an `up`): a failed delete is fine if the rule is gone.
    remove_tagged(&[comment(stack), fault_comment(stack)]).await
}

/// Remove the fault drops of a stack (none is fine).
pub async fn remove_faults(stack: &str) -> Result<(), RuntimeError> {
    if !iptables_available() {
        return Ok(());
    }
    remove_tagged(&[fault_comment(stack)]).await
}

/// Drop packets from each source to each destination network. Inserted at
/// the top of DOCKER-USER, so they come before the VPC route's accept.
pub async fn install_drops(stack: &str, drops: &[(Cidr, Cidr)]) -> Result<(), RuntimeError> {
    install_drop_rules(stack, drops, None).await
}

/// Drop `ppm` parts per million of the packets from each source to each
/// destination, at random (the `statistic` match; no netem needed).
pub async fn install_loss(stack: &str, pairs: &[(Cidr, Cidr)], ppm: u32) -> Result<(), RuntimeError> {
    install_drop_rules(stack, pairs, Some(ppm as f64 / 1_000_000.0)).await
}

async fn install_drop_rules(stack: &str, pairs: &[(Cidr, Cidr)], share: Option<f64>) -> Result<(), RuntimeError> {
    let tag = fault_comment(stack);
    for (src, dst) in pairs {
        let mut args: Vec<String> =
            ["-w", "-t", "filter", "-I", "DOCKER-USER", "1", "-s", &src.to_string(), "-d", &dst.to_string()]
                .map(String::from)
                .into();
        if let Some(p) = share {
            args.extend(["-m", "statistic", "--mode", "random", "--probability", &format!("{p:.6}")].map(String::from));
        }
        args.extend(["-m", "comment", "--comment", &tag, "-j", "DROP"].map(String::from));
        run_checked(&args).await?;
    }
    Ok(())
}

/// Queue packets from each source to each destination network to a link
/// agent. `--queue-bypass` lets packets through if the agent is gone, so a
/// dead agent means a fast link, never a cut one. Fault queues go on top, so
/// a packet a fault delays skips the normal latency's queue (the fault's
/// agent adds both).
pub async fn install_queue(stack: &str, pairs: &[(Cidr, Cidr)], queue: u16, fault: bool) -> Result<(), RuntimeError> {
    let tag = if fault { fault_comment(stack) } else { comment(stack) };
    let q = queue.to_string();
    for (src, dst) in pairs {
        let (s, d) = (src.to_string(), dst.to_string());
        let mut args: Vec<String> = ["-w", "-t", "mangle"].iter().map(|s| s.to_string()).collect();
        if fault {
            args.extend(["-I", "FORWARD", "1"].map(String::from));
        } else {
            args.extend(["-A", "FORWARD"].map(String::from));
        }
        args.extend(
            [
                "-s",
                &s,
                "-d",
                &d,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &q,
                "--queue-bypass",
            ]
            .map(String::from),
        );
        run_checked(&args).await?;
    }
    Ok(())
}

async fn run_checked(args: &[String]) -> Result<String, RuntimeError> {
    if !iptables_available() {
        return Err(RuntimeError::HostTool {
            command: "iptables".into(),
            stderr: "not installed; network faults need it (apt-get install -y iptables)".into(),
        });
    }
    run(args).await
}

/// How many fault drops a stack has installed.
pub async fn fault_rule_count(stack: &str) -> usize {
    if !iptables_available() {
        return 0;
    }
    listed(&[fault_comment(stack)]).await.len()
}

async fn remove_tagged(tags: &[String]) -> Result<(), RuntimeError> {
    for _ in 0..3 {
        let ours = listed(tags).await;
        if ours.is_empty() {
            return Ok(());
        }
        for (table, rule) in ours {
            let mut args = vec!["-w".to_string(), "-t".into(), table.into(), "-D".into()];
            args.extend(rule);
            let _ = run(&args).await;
        }
    }
    match listed(tags).await.first() {
        None => Ok(()),
        Some((table, rule)) => Err(RuntimeError::HostTool {
            command: format!("iptables -t {table} -D {}", rule.join(" ")),
            stderr: "the rule is still installed after three attempts to delete it".into(),
        }),
    }
}

/// Rules with one of these comments, as (table, `-A` arguments without the
/// `-A`).
async fn listed(tags: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let mut out = vec![];
    for (table, chain) in [("filter", "DOCKER-USER"), ("nat", "POSTROUTING"), ("mangle", "FORWARD")] {
        let Ok(listing) = run(&["-w".into(), "-t".into(), table.into(), "-S".into(), chain.into()]).await else {
            continue;
        };
        for line in listing.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ours =
                words.windows(2).any(|w| w[0] == "--comment" && tags.iter().any(|t| w[1].trim_matches('"') == t));
            if ours && words.first() == Some(&"-A") {
                out.push((table, words[1..].iter().map(|w| w.trim_matches('"').to_string()).collect()));
            }
        }
    }
    out
}

/// Stacks that still have rules installed (for sweeping orphans).
pub async fn stacks_with_rules() -> Vec<String> {
    if !iptables_available() {
        return vec![];
    }
    let Ok(listing) = run(&["-w".into(), "-S".into(), "DOCKER-USER".into()]).await else {
        return vec![];
    };
    let mut out: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split("voyager-sim:").nth(1))
        .map(|rest| rest.split(|c: char| c == '"' || c == ':' || c.is_whitespace()).next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_forwarding_and_nat_for_the_vpc_only() {
        let r = rules("t1", "10.0.0.0/16".parse().unwrap());
        assert_eq!(r.len(), 2);
        for (_, _, args) in &r {
            let joined = args.join(" ");
            assert!(
                joined.starts_with("-s 10.0.0.0/16 -d 10.0.0.0/16 -m comment --comment voyager-sim:t1 -j "),
                "{joined}"
            );
        }
        assert_eq!(r[0].1, "DOCKER-USER");
        assert_eq!(r[1].2.last().unwrap(), "RETURN");
    }
}
