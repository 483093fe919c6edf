//! The labels every container, network and volume carries, and the names
//! derived from a stack. Sweeping works from these alone, so a run killed at
//! any moment can be cleaned up by the next one.

use std::collections::HashMap;

/// Present on everything we create; the value is the run id.
pub const RUN: &str = "voyager-sim";
/// The stack name: `down` and the sweep at `up` remove by this.
pub const STACK: &str = "voyager-sim.stack";
/// `pid:start-time` of a process whose death means the run is garbage (library
/// runs that clean up on drop). Absent for `up`, whose stack outlives it.
pub const OWNER: &str = "voyager-sim.owner";
/// The instance a container runs, for `status`.
pub const INSTANCE: &str = "voyager-sim.instance";

pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
}

pub fn new_run_id() -> String {
    format!("{}-{}", chrono_free_timestamp(), random_suffix())
}

fn chrono_free_timestamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Docker object names: `vs-<stack>-<what>`, short enough for interface names.
pub fn object_name(stack: &str, what: &str) -> String {
    format!("vs-{stack}-{what}")
}

#[derive(Debug, Clone)]
pub struct Labels {
    pub run_id: String,
    pub stack: String,
    pub owner: Option<String>,
}

impl Labels {
    pub fn map(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([(RUN.to_string(), self.run_id.clone()), (STACK.to_string(), self.stack.clone())]);
        if let Some(o) = &self.owner {
            m.insert(OWNER.to_string(), o.clone());
        }
        m
    }

    pub fn with_instance(&self, instance: &str) -> HashMap<String, String> {
        let mut m = self.map();
        m.insert(INSTANCE.to_string(), instance.to_string());
        m
    }
}

/// This process as an owner label value. The start time guards against a
/// recycled pid making a dead owner look alive.
pub fn this_process_owner() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", process_start_time(pid).unwrap_or(0))
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process named by an owner label is still running.
pub fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        assert!(owner_alive(&this_process_owner()));
        assert!(!owner_alive(&format!("{}:1", std::process::id())));
        assert!(!owner_alive("4194303:5"));
        assert!(!owner_alive("garbage"));
    }
}
