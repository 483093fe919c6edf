//! Faults against real containers: a one-way partition drops exactly the
//! traffic it names, an AZ outage stops the AZ, pause freezes, latency,
//! loss and rate caps shape the link they name, and `heal` (or `down`)
//! leaves no fault behind.

use std::time::Duration;

use voyager_sim::fault::{Fault, OutageMode, Side};
use voyager_sim::runtime::{container, docker, route};
use voyager_sim::{Progress, RunningStack, ServiceKind, Tier};

mod common;

async fn start(name: &str, octet: u8) -> RunningStack {
    common::start(name, octet, &[ServiceKind::Postgres]).await
}

/// Can a client in (az, tier) open a PostgreSQL connection to `addr`?
async fn reaches(running: &RunningStack, az: &str, tier: Tier, addr: &str) -> bool {
    let (code, _) =
        running.run_in_subnet(az, tier, &["pg_isready", "-h", addr, "-p", "5432", "-t", "2"]).await.unwrap();
    code == 0
}

async fn running_state(name: &str) -> (bool, bool) {
    let d = docker::connect(&Progress::silent()).await.unwrap();
    let s = container::state(&d, name).await.unwrap();
    (s.running, s.paused)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_way_partition_drops_only_what_it_names_and_heal_restores_it() {
    let mut running = start("t-part", 215).await;
    let a = "10.215.1.10";
    assert!(reaches(&running, "c", Tier::Public, a).await, "before: c reaches postgres-a");

    let stack = running.stack().unwrap();
    running
        .inject(Fault::Partition {
            from: Side::parse("c", &stack).unwrap(),
            to: Side::parse("postgres-a", &stack).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(route::fault_rule_count("t-part").await, 2, "one drop per subnet of AZ c");
    assert!(!reaches(&running, "c", Tier::Public, a).await, "c -> postgres-a is cut");
    assert!(reaches(&running, "b", Tier::Public, a).await, "b -> postgres-a is not part of the fault");
    assert!(reaches(&running, "c", Tier::Public, "10.215.2.10").await, "c -> postgres-b is not part of the fault");

    let healed = running.heal(Duration::from_secs(60)).await.unwrap();
    assert_eq!(healed.len(), 1);
    assert_eq!(route::fault_rule_count("t-part").await, 0);
    assert!(reaches(&running, "c", Tier::Public, a).await, "after heal: c reaches postgres-a again");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_az_outage_stops_the_az_and_heal_brings_it_back_replicating() {
    let mut running = start("t-azout", 216).await;
    running.inject(Fault::AzOutage { az: "c".into(), mode: OutageMode::Kill }).await.unwrap();
    assert_eq!(running_state("vs-t-azout-postgres-c").await, (false, false), "postgres-c is down");
    assert_eq!(running_state("vs-t-azout-postgres-a").await, (true, false), "AZ a is untouched");
    assert!(reaches(&running, "a", Tier::Public, "10.216.2.10").await, "a still reaches b");
    assert!(!reaches(&running, "c", Tier::Public, "10.216.1.10").await, "AZ c's subnets are cut off");

    running.heal(Duration::from_secs(60)).await.unwrap();
    assert_eq!(running_state("vs-t-azout-postgres-c").await, (true, false));
    voyager_sim::services::postgres::provision(running.state(), Duration::from_secs(60))
        .await
        .expect("the replica streams again");
    assert_eq!(route::fault_rule_count("t-azout").await, 0);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_freezes_an_instance_and_heal_thaws_it() {
    let mut running = start("t-pause", 217).await;
    let c = running.postgres_instance("postgres-c").unwrap();
    running.inject(Fault::Pause { instance: "postgres-c".into() }).await.unwrap();
    assert_eq!(running_state("vs-t-pause-postgres-c").await, (true, true));
    let frozen = tokio::time::timeout(Duration::from_secs(3), c.query_strings("SELECT 1")).await;
    assert!(!matches!(frozen, Ok(Ok(_))), "a paused server must not answer");
    running.heal(Duration::from_secs(60)).await.unwrap();
    assert!(c.query_strings("SELECT 1").await.is_ok());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn down_removes_faults_that_were_never_healed() {
    let mut running = start("t-unhealed", 218).await;
    running.inject(Fault::Partition { from: Side::Az("a".into()), to: Side::Az("b".into()) }).await.unwrap();
    running.inject(Fault::Pause { instance: "postgres-c".into() }).await.unwrap();
    let (b, c) = (Side::Az("b".into()), Side::Az("c".into()));
    running.inject(Fault::Latency { from: b.clone(), to: c.clone(), delay_us: 20_000, jitter_us: 0 }).await.unwrap();
    running.inject(Fault::Loss { from: c.clone(), to: b.clone(), ppm: 100_000 }).await.unwrap();
    running.inject(Fault::Bandwidth { from: b, to: c, kbit: 1000 }).await.unwrap();
    assert!(route::fault_rule_count("t-unhealed").await > 0);
    running.shutdown().await.unwrap();
    // Drops, loss and delay queues are firewall rules with the stack's
    // comment; delay agents are labelled containers; rate caps live on
    // bridges that went with the networks.
    assert_eq!(route::fault_rule_count("t-unhealed").await, 0);
    let d = docker::connect(&Progress::silent()).await.unwrap();
    let (cs, ns, vs) = voyager_sim::runtime::sweep::leftovers(&d, "t-unhealed").await.unwrap();
    assert!(cs.is_empty() && ns.is_empty() && vs.is_empty(), "{cs:?} {ns:?} {vs:?}");
    assert!(!route::stacks_with_rules().await.contains(&"t-unhealed".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_naming_something_the_stack_lacks_is_refused_before_anything_breaks() {
    let mut running = start("t-badfault", 219).await;
    let err = running.inject(Fault::AzOutage { az: "d".into(), mode: OutageMode::Kill }).await.unwrap_err();
    assert!(err.to_string().contains("unknown AZ `d`; the stack's AZs are a, b, c"), "{err}");
    assert!(running.state().faults.is_empty(), "a refused fault is not recorded");
    running.shutdown().await.unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The stack's normal inter-AZ latency is in force from `up`; a latency
/// fault adds to one direction only; loss drops about the share asked; a
/// rate cap holds throughput under it; `heal` restores the normal link and
/// removes every agent, rule and cap. Bounds are wide: this proves each
/// effect is there and undone, the bench measures how exact it is.
#[tokio::test(flavor = "multi_thread")]
async fn link_faults_slow_drop_and_cap_the_link_they_name_and_heal_restores_it() {
    let mut running = common::start("t-link", 222, &[ServiceKind::Influxdb]).await;
    let name = "t-link";
    let normal = median(running.round_trips("a", "b", 100, Duration::from_millis(5)).await.unwrap().0);
    assert!(ms(normal) >= 2.0, "1 ms each way is in force from `up`: round trip {normal:?}");
    assert!(ms(normal) < 15.0, "normal round trip {normal:?}");

    let (a, b) = (Side::Az("a".into()), Side::Az("b".into()));
    running.inject(Fault::Latency { from: a.clone(), to: b.clone(), delay_us: 30_000, jitter_us: 0 }).await.unwrap();
    let slow = median(running.round_trips("a", "b", 100, Duration::from_millis(5)).await.unwrap().0);
    assert!(ms(slow) >= 32.0 && ms(slow) < 80.0, "30 ms one way on top of 1 ms each way: {slow:?}");
    let back = median(running.round_trips("b", "a", 100, Duration::from_millis(5)).await.unwrap().0);
    assert!(ms(back) >= 32.0, "a round trip from b crosses a -> b too: {back:?}");
    running.heal(Duration::from_secs(30)).await.unwrap();
    let healed = median(running.round_trips("a", "b", 100, Duration::from_millis(5)).await.unwrap().0);
    assert!(ms(healed) < 15.0, "heal restores the normal link: {healed:?}");

    running.inject(Fault::Loss { from: a.clone(), to: b.clone(), ppm: 500_000 }).await.unwrap();
    let (_, lost) = running.round_trips("a", "b", 200, Duration::from_millis(2)).await.unwrap();
    assert!((50..=150).contains(&lost), "50 % loss lost {lost} of 200");
    running.heal(Duration::from_secs(30)).await.unwrap();
    let (_, lost) = running.round_trips("a", "b", 100, Duration::from_millis(2)).await.unwrap();
    assert_eq!(lost, 0, "heal removes the loss");

    let open = running.throughput("a", "b", 4_000_000).await.unwrap();
    running.inject(Fault::Bandwidth { from: a.clone(), to: b.clone(), kbit: 2000 }).await.unwrap();
    let capped = running.throughput("a", "b", 500_000).await.unwrap();
    assert!(capped < 3000.0, "capped at 2 mbit/s, measured {capped:.0} kbit/s");
    assert!(open > 4.0 * capped, "uncapped {open:.0} kbit/s against capped {capped:.0}");
    // Caps are one-way: the other direction keeps its speed.
    let reverse = running.throughput("b", "a", 4_000_000).await.unwrap();
    assert!(reverse > 4.0 * capped, "b -> a is not capped: {reverse:.0} kbit/s");
    assert!(route::fault_rule_count(name).await == 0, "a rate cap is no firewall rule");
    running.inject(Fault::Latency { from: b, to: a, delay_us: 5_000, jitter_us: 2_000 }).await.unwrap();
    assert!(route::fault_rule_count(name).await > 0);

    running.heal(Duration::from_secs(30)).await.unwrap();
    assert_eq!(route::fault_rule_count(name).await, 0);
    let d = docker::connect(&Progress::silent()).await.unwrap();
    assert_eq!(
        voyager_sim::runtime::link::remove_agents(&d, name, voyager_sim::runtime::link::FAULT_AGENT).await.unwrap(),
        0,
        "heal removed the fault agents"
    );
    let healed = running.throughput("a", "b", 4_000_000).await.unwrap();
    assert!(healed > 4.0 * capped, "heal lifts the cap: {healed:.0} kbit/s");
    running.shutdown().await.unwrap();
    assert!(
        !route::stacks_with_rules().await.contains(&name.to_string()),
        "down removes the normal latency's queue rules"
    );
}
