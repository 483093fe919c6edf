//! RDS Multi-AZ's control plane, as decisions: what to do given what was
//! observed. **Pure**; `rds_ops` observes and applies.
//!
//! - A lost synchronous standby is detached (the primary stops waiting for
//!   it, as RDS keeps the primary writable while it replaces a standby) and
//!   attached again once it streams.
//! - A lost primary is failed over after `detection`: lost means this
//!   control plane cannot reach it, or every other node has stopped
//!   receiving its WAL (it is alive but cut off from the other AZs). The
//!   synchronous standby is promoted; the old primary is fenced first, so it
//!   can never take a write again, and rebuilt as the new standby once it
//!   can run and reach the new primary.
//! - **No acknowledged commit is ever failed away from.** A primary that
//!   looks cut off from every other node keeps its synchronous standby (its
//!   commits wait, so nothing is acknowledged that the standby lacks); only
//!   a standby lost while the primary still feeds another node is
//!   detached. A standby that was detached (or is a rebuild not yet in
//!   sync) is never promoted: the primary committed without it. Being
//!   unreachable and being cut off are timed apart, so a primary that comes
//!   back after a pause starts its cut-off clock afresh while the others
//!   reconnect to it.

use std::time::Duration;

/// One database node as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// Its role in the run state: primary, standby or replica.
    pub role: String,
    /// Its container runs (not stopped, not frozen).
    pub running: bool,
    /// It answered a query just now.
    pub reachable: bool,
    /// For a standby or replica: its WAL receiver is streaming.
    pub receiving: bool,
    /// A fault in force stops it, or cuts it off from the primary: wait
    /// for the heal rather than rebuild it into a wall.
    pub held_by_fault: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    pub nodes: Vec<NodeView>,
    /// Names the primary reports streaming in `pg_stat_replication`.
    pub primary_streams_to: Vec<String>,
    /// The primary's commits wait for a synchronous standby.
    pub sync_on: bool,
}

impl Observation {
    pub fn node(&self, role: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.role == role)
    }
}

/// What the control plane remembers between looks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Memory {
    /// Since when (seconds on the control plane's clock) the primary has
    /// been unreachable from here.
    pub primary_lost_since: Option<f64>,
    /// Since when it has answered here but fed no other node.
    pub primary_cut_off_since: Option<f64>,
    /// The standby may lack acknowledged commits: it was detached, or it
    /// is a new standby not yet streaming in sync. Never promoted then.
    pub standby_behind: bool,
    /// Since when the standby has looked lost.
    pub standby_lost_since: Option<f64>,
    /// An old primary that was failed away from and awaits its rebuild as
    /// the new standby.
    pub to_rebuild: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The primary stops waiting for the standby.
    Detach { standby: String },
    /// Commits wait for the standby again.
    Attach { standby: String },
    /// Fence `from`, promote `to`, point the writer and the replicas at it.
    Failover { from: String, to: String },
    /// Re-create a node as the standby of the current primary.
    Rebuild { node: String },
    /// Nothing to do but say so (once per situation, the caller dedups).
    Note(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How long the primary must look lost before failing over.
    pub detection: Duration,
    /// How long the standby must look lost before the primary stops
    /// waiting for it.
    pub standby_detection: Duration,
}

/// The primary answers here but is cut off from every other node (none
/// receives its WAL, and it streams to none).
pub fn primary_cut_off(obs: &Observation) -> bool {
    let Some(p) = obs.node("primary") else { return false };
    let others: Vec<&NodeView> = obs.nodes.iter().filter(|n| n.role != "primary" && n.reachable).collect();
    p.reachable && !others.is_empty() && others.iter().all(|n| !n.receiving) && obs.primary_streams_to.is_empty()
}

/// The primary looks lost: unreachable from here, or cut off.
pub fn primary_lost(obs: &Observation) -> bool {
    obs.node("primary").is_some_and(|p| !p.reachable) || primary_cut_off(obs)
}

impl Memory {
    /// What an action, once it took effect, means for what is promotable:
    /// after a detach the standby may lack commits; after a failover the
    /// old primary is rebuilt and not in sync until it streams. Only
    /// applied on success, so a failed effect is tried again rather than
    /// leaving a standby marked behind that never was.
    pub fn applied(&mut self, action: &Action) {
        if matches!(action, Action::Detach { .. } | Action::Failover { .. }) {
            self.standby_behind = true;
        }
        if matches!(action, Action::Rebuild { .. }) {
            // A rebuild returns once the node streams as the synchronous
            // standby: it holds every commit.
            self.standby_behind = false;
        }
    }
}

pub fn decide(obs: &Observation, mem: &mut Memory, s: &Settings, now: f64) -> Vec<Action> {
    let mut out = vec![];
    let Some(primary) = obs.node("primary") else { return out };
    let standby = obs.node("standby");

    // The primary: each way of being lost has its own clock.
    let unreachable = !primary.reachable;
    let cut_off = primary_cut_off(obs);
    if !unreachable {
        mem.primary_lost_since = None;
    }
    if !cut_off {
        mem.primary_cut_off_since = None;
    }
    let since = if unreachable {
        Some(*mem.primary_lost_since.get_or_insert(now))
    } else if cut_off {
        Some(*mem.primary_cut_off_since.get_or_insert(now))
    } else {
        None
    };
    if since.is_some_and(|t| now - t >= s.detection.as_secs_f64()) {
        match standby {
            Some(sb) if sb.reachable && sb.running && !mem.standby_behind => {
                out.push(Action::Failover { from: primary.name.clone(), to: sb.name.clone() });
                mem.primary_lost_since = None;
                mem.primary_cut_off_since = None;
                mem.standby_lost_since = None;
                mem.to_rebuild = Some(primary.name.clone());
                return out;
            }
            Some(sb) if mem.standby_behind => out.push(Action::Note(format!(
                "primary {} lost, but standby {} may lack commits the primary acknowledged without it; \
                 not promoting it (that would lose them): writes wait until the primary is back",
                primary.name, sb.name
            ))),
            _ => out.push(Action::Note(format!(
                "primary {} lost and no standby to promote; writes wait until one is back",
                primary.name
            ))),
        }
    }

    // The standby.
    if let Some(sb) = standby {
        let streaming = obs.primary_streams_to.iter().any(|n| n == &sb.name);
        if mem.to_rebuild.as_deref() == Some(sb.name.as_str()) {
            // An old primary: it is rebuilt, not waited for.
            if sb.running && !sb.held_by_fault && primary.reachable {
                out.push(Action::Rebuild { node: sb.name.clone() });
            } else if !sb.running && !sb.held_by_fault {
                // Its host is gone (a kill from outside the simulator):
                // RDS replaces the instance.
                out.push(Action::Rebuild { node: sb.name.clone() });
            }
        } else if !streaming && primary.reachable {
            let since = *mem.standby_lost_since.get_or_insert(now);
            // A primary that feeds nobody may be the one cut off: its
            // commits keep waiting for the standby rather than be
            // acknowledged by it alone.
            if obs.sync_on && !cut_off && now - since >= s.standby_detection.as_secs_f64() {
                out.push(Action::Detach { standby: sb.name.clone() });
            }
            // Stopped with no fault of the simulator's to undo (killed
            // from outside): nobody will start it, so RDS replaces it.
            if !sb.running && !sb.held_by_fault && now - since >= s.detection.as_secs_f64() {
                out.push(Action::Rebuild { node: sb.name.clone() });
            }
        } else if streaming {
            mem.standby_lost_since = None;
            if obs.sync_on {
                // Streaming, and commits wait for it: it has every one.
                mem.standby_behind = false;
            } else {
                out.push(Action::Attach { standby: sb.name.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, reachable: bool, receiving: bool) -> NodeView {
        NodeView { name: name.into(), role: role.into(), running: true, reachable, receiving, held_by_fault: false }
    }

    fn healthy() -> Observation {
        Observation {
            nodes: vec![
                node("pa", "primary", true, false),
                node("pb", "standby", true, true),
                node("pc", "replica", true, true),
            ],
            primary_streams_to: vec!["pb".into(), "pc".into()],
            sync_on: true,
        }
    }

    const S: Settings = Settings { detection: Duration::from_secs(30), standby_detection: Duration::from_secs(2) };

    #[test]
    fn a_healthy_cluster_needs_nothing() {
        let mut m = Memory::default();
        assert_eq!(decide(&healthy(), &mut m, &S, 0.0), vec![]);
        assert_eq!(m, Memory::default());
    }

    #[test]
    fn a_lost_standby_is_detached_after_its_detection_and_attached_when_it_streams() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[1].reachable = false;
        o.primary_streams_to = vec!["pc".into()];
        assert_eq!(decide(&o, &mut m, &S, 10.0), vec![]);
        assert_eq!(decide(&o, &mut m, &S, 12.0), vec![Action::Detach { standby: "pb".into() }]);
        let mut back = healthy();
        back.sync_on = false;
        assert_eq!(decide(&back, &mut m, &S, 20.0), vec![Action::Attach { standby: "pb".into() }]);
    }

    #[test]
    fn a_standby_killed_from_outside_is_replaced_one_held_by_a_fault_is_waited_for() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[1] = NodeView { running: false, held_by_fault: true, ..node("pb", "standby", false, false) };
        o.primary_streams_to = vec!["pc".into()];
        o.sync_on = false;
        assert_eq!(decide(&o, &mut m, &S, 0.0), vec![]);
        assert_eq!(decide(&o, &mut m, &S, 100.0), vec![], "the heal will start it");
        o.nodes[1].held_by_fault = false;
        let mut m = Memory::default();
        decide(&o, &mut m, &S, 0.0);
        assert_eq!(decide(&o, &mut m, &S, 30.0), vec![Action::Rebuild { node: "pb".into() }]);
    }

    #[test]
    fn a_dead_primary_fails_over_only_after_detection() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[0].reachable = false;
        o.nodes[1].receiving = false;
        o.nodes[2].receiving = false;
        o.primary_streams_to.clear();
        assert_eq!(decide(&o, &mut m, &S, 100.0), vec![]);
        assert_eq!(decide(&o, &mut m, &S, 129.0), vec![]);
        assert_eq!(decide(&o, &mut m, &S, 130.0), vec![Action::Failover { from: "pa".into(), to: "pb".into() }]);
        assert_eq!(m.to_rebuild.as_deref(), Some("pa"));
    }

    #[test]
    fn a_primary_that_blinks_is_not_failed_over() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[0].reachable = false;
        decide(&o, &mut m, &S, 0.0);
        decide(&healthy(), &mut m, &S, 10.0);
        assert_eq!(m.primary_lost_since, None);
        assert_eq!(decide(&o, &mut m, &S, 31.0), vec![], "the clock restarts after it answered again");
    }

    #[test]
    fn a_primary_cut_off_from_every_other_az_is_lost_though_it_answers_here() {
        let mut o = healthy();
        o.nodes[1].receiving = false;
        o.nodes[2].receiving = false;
        o.primary_streams_to.clear();
        assert!(primary_lost(&o));
        // Only the standby cut off: the standby is the one lost.
        let mut o = healthy();
        o.nodes[1].receiving = false;
        o.primary_streams_to = vec!["pc".into()];
        assert!(!primary_lost(&o));
    }

    /// The soak's cycle 10 (seed 1): the primary's AZ frozen for 28 s. It
    /// answered again at 38 s while the others were still reconnecting; the
    /// standby was detached, the primary acknowledged commits alone, and the
    /// 30 s counted from the freeze then failed over to the standby that
    /// lacked them: 78 acknowledged inserts lost.
    #[test]
    fn a_primary_back_from_a_freeze_is_neither_left_alone_nor_failed_away_from() {
        let mut m = Memory::default();
        let mut frozen = healthy();
        frozen.nodes[0].reachable = false;
        frozen.nodes[1].receiving = false;
        frozen.nodes[2].receiving = false;
        frozen.primary_streams_to.clear();
        for t in [10.0, 20.0, 37.0] {
            assert_eq!(decide(&frozen, &mut m, &S, t), vec![]);
        }
        // Thawed: it answers, nobody has reconnected yet.
        let mut thawed = frozen.clone();
        thawed.nodes[0].reachable = true;
        for t in [38.0, 39.5, 41.0, 42.5, 45.0] {
            assert_eq!(decide(&thawed, &mut m, &S, t), vec![], "at {t}: keep the standby, and no failover");
        }
        assert_eq!(decide(&healthy(), &mut m, &S, 46.0), vec![]);
        assert!(!m.standby_behind);
    }

    #[test]
    fn a_detached_standby_is_never_promoted() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[1].receiving = false;
        o.primary_streams_to = vec!["pc".into()];
        decide(&o, &mut m, &S, 0.0);
        let a = decide(&o, &mut m, &S, 3.0);
        assert_eq!(a, vec![Action::Detach { standby: "pb".into() }]);
        m.applied(&a[0]);
        // The primary commits alone, then dies.
        let mut dead = o.clone();
        dead.nodes[0].reachable = false;
        dead.primary_streams_to.clear();
        dead.sync_on = false;
        decide(&dead, &mut m, &S, 10.0);
        let a = decide(&dead, &mut m, &S, 41.0);
        assert!(matches!(&a[..], [Action::Note(n)] if n.contains("may lack commits")), "{a:?}");
        // Once it streamed in sync again it is promotable.
        let mut m = Memory { standby_behind: true, ..Default::default() };
        decide(&healthy(), &mut m, &S, 50.0);
        assert!(!m.standby_behind);
    }

    #[test]
    fn a_cut_off_primary_keeps_waiting_for_its_standby_and_is_failed_over() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[1].receiving = false;
        o.nodes[2].receiving = false;
        o.primary_streams_to.clear();
        assert_eq!(decide(&o, &mut m, &S, 0.0), vec![]);
        assert_eq!(decide(&o, &mut m, &S, 5.0), vec![], "no detach: its commits wait, none is acknowledged alone");
        let a = decide(&o, &mut m, &S, 30.0);
        assert_eq!(a, vec![Action::Failover { from: "pa".into(), to: "pb".into() }]);
        assert!(!m.standby_behind, "not before the failover took effect");
        m.applied(&a[0]);
        assert!(m.standby_behind, "the rebuilt old primary is not promotable until it streams in sync");
        m.applied(&Action::Rebuild { node: "pa".into() });
        assert!(!m.standby_behind);
    }

    #[test]
    fn without_a_standby_to_promote_it_says_so_and_waits() {
        let mut m = Memory::default();
        let mut o = healthy();
        o.nodes[0].reachable = false;
        o.nodes[1].reachable = false;
        decide(&o, &mut m, &S, 0.0);
        let a = decide(&o, &mut m, &S, 40.0);
        assert!(matches!(&a[..], [Action::Note(n)] if n.contains("no standby")), "{a:?}");
    }

    #[test]
    fn the_old_primary_is_rebuilt_once_it_runs_free_of_faults() {
        let mut m = Memory { to_rebuild: Some("pa".into()), ..Default::default() };
        // After the failover: pb primary, pa the (fenced) standby-to-be.
        let mut o = Observation {
            nodes: vec![
                NodeView { running: false, held_by_fault: true, ..node("pa", "standby", false, false) },
                node("pb", "primary", true, false),
                node("pc", "replica", true, true),
            ],
            primary_streams_to: vec!["pc".into()],
            sync_on: false,
        };
        assert_eq!(decide(&o, &mut m, &S, 0.0), vec![], "its AZ is still out: wait for the heal");
        o.nodes[0] = NodeView { running: true, held_by_fault: false, ..node("pa", "standby", true, false) };
        assert_eq!(decide(&o, &mut m, &S, 5.0), vec![Action::Rebuild { node: "pa".into() }]);
        // Killed from outside, no fault recorded: replaced.
        o.nodes[0] = NodeView { running: false, held_by_fault: false, ..node("pa", "standby", false, false) };
        assert_eq!(decide(&o, &mut m, &S, 6.0), vec![Action::Rebuild { node: "pa".into() }]);
    }
}
