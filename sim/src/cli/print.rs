//! How the CLI prints a stack: `status`, `check`'s placement, dotenv lines.

use voyager_sim::harness::StackStatus;
use voyager_sim::stack::Stack;

pub(crate) fn print_status(s: &StackStatus) {
    println!("stack `{}` run {} ({} images, VPC {})", s.stack, s.run_id, s.images, s.vpc);
    let w = s.instances.iter().map(|i| i.instance.len()).max().unwrap_or(0).max(20);
    let ws = s.instances.iter().map(|i| i.service.len()).max().unwrap_or(0).max(9);
    println!(
        "{:<w$} {:<ws$} {:<3} {:<8} {:<11} {:<16} HEALTH",
        "INSTANCE", "SERVICE", "AZ", "SUBNET", "ADDRESS", "ENDPOINT"
    );
    if let Some(c) = &s.control {
        println!(
            "control plane: {}{}",
            if c.running { "running" } else { "NOT RUNNING (automatic failover and volume provisioning are off)" },
            if c.recent.is_empty() {
                "; no action yet".to_string()
            } else {
                format!("; latest: {}", c.recent.join("; "))
            }
        );
    }
    for i in &s.instances {
        let mut detail = i.role.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default();
        detail += &i.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        println!(
            "{:<w$} {:<ws$} {:<3} {:<8} {:<11} {:<16} {}{}",
            i.instance,
            i.service,
            i.az,
            i.subnet,
            i.address,
            i.endpoint.as_deref().unwrap_or("-"),
            i.health,
            detail
        );
    }
    if let Some(b) = &s.backups {
        match (&b.unavailable, &b.error) {
            (Some(why), _) => println!("backups: none ({why})"),
            (None, Some(e)) => println!("backups: the repository could not be read: {e}"),
            (None, None) => {
                match (&b.earliest_restorable, &b.latest_restorable) {
                    (Some(from), Some(to)) => {
                        println!("backups: restorable from {from} to {to} (latest restorable time)")
                    }
                    _ => println!("backups: none yet (the control plane takes the first when the database is new)"),
                }
                for line in &b.backups {
                    println!("  {line}");
                }
            }
        }
    }
}

pub(crate) fn print_plan(s: &Stack) {
    println!("stack `{}`: VPC {}", s.name, s.vpc);
    for az in &s.azs {
        println!("  az {}: private {}, public {}", az.name, az.private, az.public);
    }
    let width = s.services.iter().flat_map(|svc| &svc.instances).map(|i| i.name.len()).max().unwrap_or(0).max(16);
    for svc in &s.services {
        for i in &svc.instances {
            let what = match (&i.group, svc.kind) {
                (Some(g), _) => format!(" ({g} node group)"),
                (None, voyager_sim::ServiceKind::Kubernetes) => format!(" ({})", i.role),
                _ => String::new(),
            };
            println!("  {:<width$} {:<10} az {} {} {}{what}", i.name, svc.kind, i.az, i.tier, i.address);
        }
    }
    if let Some(k) = &s.kubernetes {
        println!(
            "  kubernetes: node-monitor-grace-period {}s, not-ready toleration {}s, {} pod addresses per node, services {}",
            k.node_monitor_grace_period.as_secs_f64(),
            k.not_ready_toleration.as_secs_f64(),
            k.pods_per_node,
            k.service_cidr
        );
    }
    // What it costs before it runs: a laptop user decides by this.
    let f = voyager_sim::stack::footprint::of(s);
    let total = if f.total_mib < 1024 {
        format!("{} MiB", f.total_mib)
    } else {
        format!("{:.1} GiB", f.total_mib as f64 / 1024.0)
    };
    println!("  expected memory, idle: {total} (voyager-bench footprint measures it)");
    for (kind, n, mib) in &f.services {
        println!("    {:<12} {n:>2} container{} {mib:>6} MiB", kind.to_string(), if *n == 1 { " " } else { "s" });
    }
    println!("    {:<12} {:>13} {:>6} MiB", "simulator", "", voyager_sim::stack::footprint::SIMULATOR_MIB);
}

/// Values go in single quotes when they hold anything a shell or dotenv
/// parser would read specially.
pub(crate) fn dotenv_quote(v: &str) -> String {
    if v.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}
