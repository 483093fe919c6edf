//! Property tests for the stack file: whatever valid file we generate parses,
//! round-trips through `to_toml`, relocates, and every broken variant of it
//! is rejected at the right line.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use voyager_sim::stack::{parse_stack, Stack};

#[derive(Debug, Clone)]
struct Gen {
    vpc_octet: u8,
    azs: Vec<(String, u8, u8)>,
    instances: Vec<(usize, bool, Option<u8>)>,
}

impl Gen {
    fn text(&self) -> String {
        let mut t = format!("name = \"p\"\n[vpc]\ncidr = \"10.{}.0.0/16\"\n", self.vpc_octet);
        for (name, pr, pu) in &self.azs {
            t += &format!(
                "[az.{name}]\nprivate = \"10.{v}.{pr}.0/24\"\npublic = \"10.{v}.{pu}.0/24\"\n",
                v = self.vpc_octet
            );
        }
        for (i, (az, public, host)) in self.instances.iter().enumerate() {
            let (name, pr, pu) = &self.azs[*az];
            t += &format!("[[service.postgres.instance]]\naz = \"{name}\"\n");
            if i > 0 {
                t += "role = \"replica\"\n";
            }
            if *public {
                t += "subnet = \"public\"\n";
            }
            if let Some(h) = host {
                t += &format!("address = \"10.{}.{}.{h}\"\n", self.vpc_octet, if *public { pu } else { pr });
            }
        }
        t
    }
}

fn gen() -> impl Strategy<Value = Gen> {
    (0u8..=255, 1usize..=4, proptest::collection::btree_set(1u8..=250, 8))
        .prop_flat_map(|(vpc_octet, n_az, octets)| {
            let octets: Vec<u8> = octets.into_iter().collect();
            let azs: Vec<(String, u8, u8)> =
                (0..n_az).map(|i| (["a", "b", "c", "d"][i].to_string(), octets[2 * i], octets[2 * i + 1])).collect();
            let inst = (0..n_az, any::<bool>(), proptest::option::of(10u8..=254));
            (Just(vpc_octet), Just(azs), proptest::collection::vec(inst, 1..6))
        })
        .prop_map(|(vpc_octet, azs, mut instances)| {
            // Explicit addresses must be unique per subnet to be valid; drop clashes.
            let mut seen = BTreeSet::new();
            for (az, public, host) in &mut instances {
                if let Some(h) = host {
                    if !seen.insert((*az, *public, *h)) {
                        *host = None;
                    }
                }
            }
            Gen { vpc_octet, azs, instances }
        })
}

fn parse(text: &str) -> Stack {
    parse_stack(Path::new("gen.toml"), text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_files_parse_and_round_trip(g in gen()) {
        let s = parse(&g.text());
        prop_assert_eq!(s.services[0].instances.len(), g.instances.len());
        let again = parse(&s.to_toml());
        prop_assert_eq!(&again, &s);
    }

    #[test]
    fn every_instance_is_inside_its_subnet_and_unique(g in gen()) {
        let s = parse(&g.text());
        let mut seen = BTreeSet::new();
        for inst in &s.services[0].instances {
            let net = s.subnet_of(inst);
            prop_assert!(net.contains(inst.address));
            prop_assert!(inst.address != net.gateway() && inst.address != net.network() && inst.address != net.broadcast());
            prop_assert!(seen.insert(inst.address));
        }
        let names: BTreeSet<_> = s.services[0].instances.iter().map(|i| &i.name).collect();
        prop_assert_eq!(names.len(), s.services[0].instances.len());
    }

    #[test]
    fn relocation_keeps_the_shape_and_validity(g in gen(), to in 0u8..=255) {
        let s = parse(&g.text());
        let moved = s.relocated(format!("10.{to}.0.0/16").parse().unwrap()).unwrap();
        prop_assert_eq!(moved.vpc.to_string(), format!("10.{to}.0.0/16"));
        prop_assert_eq!(&parse(&moved.to_toml()), &moved);
        for (a, b) in s.services[0].instances.iter().zip(&moved.services[0].instances) {
            prop_assert_eq!(&a.address.octets()[2..], &b.address.octets()[2..]);
        }
    }

    #[test]
    fn an_address_outside_its_subnet_is_reported_at_its_line(g in gen(), host in 10u8..=254) {
        let mut g = g;
        g.instances[0].2 = Some(host);
        let text = g.text();
        // Point the first explicit address into a third octet no subnet uses.
        let (az, public, _) = g.instances[0];
        let octet = if public { g.azs[az].2 } else { g.azs[az].1 };
        let needle = format!("address = \"10.{}.{octet}.{host}\"", g.vpc_octet);
        let line = text.lines().position(|l| l == needle).unwrap() + 1;
        let bad = text.replacen(&needle, &format!("address = \"10.{}.255.{host}\"", g.vpc_octet), 1);
        let err = parse_stack(Path::new("gen.toml"), &bad).unwrap_err();
        let p = err.problems.iter().find(|p| p.message.contains("outside its subnet")).expect("reported");
        prop_assert_eq!(p.line, line);
        prop_assert_eq!(p.col, 11);
    }

    #[test]
    fn overlapping_subnets_are_rejected(g in gen()) {
        prop_assume!(g.azs.len() >= 2);
        let mut g = g;
        g.azs[1].1 = g.azs[0].1;
        let err = parse_stack(Path::new("gen.toml"), &g.text()).unwrap_err();
        prop_assert!(err.problems.iter().any(|p| p.message.contains("overlaps")), "{}", err);
    }
}

/// A Kubernetes stack: control planes in `cps` AZs, and two node groups
/// with the given nodes per AZ, beside a PostgreSQL instance.
fn kube_text(vpc: u8, cps: usize, sizes: &[(u8, u8, u8)], pods_per_node: u32) -> String {
    let mut t = format!("[vpc]\ncidr = \"10.{vpc}.0.0/16\"\n");
    for (i, az) in ["a", "b", "c"].iter().enumerate() {
        t += &format!("[az.{az}]\nprivate = \"10.{vpc}.{}.0/24\"\npublic = \"10.{vpc}.{}.0/24\"\n", i + 1, i + 101);
    }
    t += &format!("[service.kubernetes]\npods_per_node = {pods_per_node}\nnode_monitor_grace_period = \"7s\"\n");
    for az in ["a", "b", "c"].iter().take(cps) {
        t += &format!("[[service.kubernetes.instance]]\nrole = \"control-plane\"\naz = \"{az}\"\n");
    }
    for (g, (a, b, c)) in sizes.iter().enumerate() {
        t += &format!(
            "[[service.kubernetes.node_group]]\nname = \"g{g}\"\ninstance_types = [\"m5.large\"]\nlabels = {{ tier = \"t{g}\" }}\ntaints = [\"dedicated=g{g}:NoSchedule\"]\nsize = {{ a = {a}, b = {b}, c = {c} }}\n"
        );
    }
    t += "[[service.postgres.instance]]\naz = \"a\"\n";
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn kubernetes_stacks_round_trip_and_keep_pod_blocks_clear(
        vpc in 0u8..=255,
        cps in prop_oneof![Just(1usize), Just(3usize)],
        sizes in proptest::collection::vec((0u8..=2, 0u8..=2, 0u8..=2), 0..3),
        pods_per_node in prop_oneof![Just(8u32), Just(16u32), Just(32u32)],
        to in 0u8..=255,
    ) {
        let s = parse(&kube_text(vpc, cps, &sizes, pods_per_node));
        let nodes = &s.service(voyager_sim::ServiceKind::Kubernetes).unwrap().instances;
        let want: usize = cps + sizes.iter().map(|(a, b, c)| (a + b + c) as usize).sum::<usize>();
        prop_assert_eq!(nodes.len(), want);
        // No instance of any service sits in a node's pod block, and blocks
        // do not overlap.
        let blocks: Vec<_> = nodes.iter().map(|n| s.pod_block(n).unwrap()).collect();
        for (i, b) in blocks.iter().enumerate() {
            prop_assert!(s.subnet_of(&nodes[i]).contains_net(b));
            for other in &blocks[i + 1..] {
                prop_assert!(!b.overlaps(other), "{b} overlaps {other}");
            }
            for inst in s.services.iter().flat_map(|svc| &svc.instances) {
                prop_assert!(!b.contains(inst.address), "{} is in {b}", inst.name);
            }
        }
        prop_assert_eq!(&parse(&s.to_toml()), &s);
        let moved = s.relocated(format!("10.{to}.0.0/16").parse().unwrap()).unwrap();
        prop_assert_eq!(&parse(&moved.to_toml()), &moved);
    }
}
