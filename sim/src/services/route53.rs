//! Route 53: the stack's hosted zones on a real authoritative DNS server.
//!
//! PowerDNS Authoritative (Debian's 4.7, SQLite backend) because it is an
//! authoritative server with an HTTP API for zones and record sets, which
//! is what Route 53 is: records changed through an API, answered by DNS
//! servers. Knot and BIND change zones through dynamic updates or control
//! sockets instead; a Rust server library would have made the server ours.
//! Its caches are off, so a record set changed through the API is what the
//! next query gets; the TTL clients see is Route 53's.
//!
//! One server in no AZ (Route 53 is global), in every subnet at its `.2`,
//! the address AWS keeps for the VPC's resolver. It serves the public zone
//! (the API's failover record) and the private zone (every instance by
//! name, each service's name, the database's writer and reader names),
//! both to any client: PowerDNS has no views, so the private zone is not
//! hidden from the host as Route 53's would be. What changes the records
//! is the stack's control plane (`control::route53`): health checks decide
//! the failover record, and the database names follow the primary.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use super::SpecContext;
use crate::http::request;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const DNS_PORT: u16 = 53;
pub const API_PORT: u16 = 8081;
/// The server's instance name (it is in no AZ, so in no stack file).
pub const INSTANCE: &str = "route53";
/// Its host number in every subnet: AWS's resolver address.
pub const HOST: u32 = 2;

const ENTRY: &str = "/voyager/pdns.sh";

/// The server starts with an empty database from the schema its package
/// ships (Debian's or the official image's path), then runs in the
/// foreground as its own user. Caches off: answers follow API changes.
const ENTRY_SCRIPT: &str = r#"set -e
db=/var/lib/powerdns/pdns.sqlite3
mkdir -p /var/lib/powerdns
if [ ! -s "$db" ]; then
  for s in /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql /usr/local/share/doc/pdns/schema.sqlite3.sql; do
    if [ -f "$s" ]; then sqlite3 "$db" < "$s"; break; fi
  done
fi
chown -R pdns:pdns /var/lib/powerdns
exec pdns_server --guardian=no --daemon=no --disable-syslog --write-pid=no --log-timestamp=no \
  --setuid=pdns --setgid=pdns --local-address=0.0.0.0 --local-port=53 \
  --launch=gsqlite3 --gsqlite3-database="$db" --security-poll-suffix= \
  --api=yes --api-key="$PDNS_API_KEY" --webserver=yes --webserver-address=0.0.0.0 --webserver-port=8081 \
  --webserver-allow-from=0.0.0.0/0 --cache-ttl=0 --query-cache-ttl=0 --negquery-cache-ttl=0 \
  --zone-cache-refresh-interval=0
"#;

/// The server's container, in the first subnet and joined to the others.
pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    if cx.stack.route53.is_none() {
        return vec![];
    }
    let subnets: Vec<(String, Ipv4Addr)> = cx
        .stack
        .subnets()
        .map(|(az, tier, net)| (network_name(cx.stack_name, &az.name, tier), net.nth(HOST)))
        .collect();
    let (first, rest) = subnets.split_first().expect("a stack has subnets");
    vec![ContainerSpec {
        instance: INSTANCE.into(),
        image: image_for(ServiceKind::Route53, cx.images),
        env: BTreeMap::from([("PDNS_API_KEY".into(), cx.credentials.route53_api_key.clone())]),
        cmd: vec![ENTRY.into()],
        network: first.0.clone(),
        address: first.1,
        published: vec![Publish::any(DNS_PORT), Publish::any(API_PORT)],
        udp: vec![DNS_PORT],
        extra_networks: rest.iter().map(|(n, _)| n.clone()).collect(),
        extra_addresses: rest.iter().cloned().collect(),
        files: vec![(ENTRY.into(), 0o755, ENTRY_SCRIPT.into())],
        entrypoint: Some(vec!["/bin/sh".into()]),
        user: Some("root".into()),
        ..Default::default()
    }]
}

/// The resolver's address in a subnet: what every container of the VPC
/// forwards its queries to.
pub fn resolver_in(subnet: crate::stack::Cidr) -> Ipv4Addr {
    subnet.nth(HOST)
}

fn server(state: &RunState) -> Option<&InstanceState> {
    state.instances.iter().find(|i| i.service == ServiceKind::Route53.as_str())
}

/// Where the host asks it: `ROUTE53_DNS`.
pub fn dns_addr(state: &RunState) -> Option<SocketAddr> {
    server(state)?.published.get(&DNS_PORT).copied()
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The private zone's A records, from what runs now (roles as the run
/// state has them, so the database names follow a failover): every
/// instance by name, each service by its name (its first role's
/// instances: brokers, not controllers), and RDS's `writer.db` (the
/// primary) and `reader.db` (the read replicas, else the primary).
pub fn private_records(state: &RunState, zone: &str) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for i in &state.instances {
        let kind: Option<ServiceKind> = i.service.parse().ok();
        if kind == Some(ServiceKind::Route53) || i.role == super::postgres::backup::RESTORED_ROLE {
            continue;
        }
        out.entry(format!("{}.{zone}", i.name)).or_default().push(i.address);
        let first_role = kind.map(|k| k.roles()[0]);
        if first_role == Some(i.role.as_str()) && kind != Some(ServiceKind::Postgres) {
            out.entry(format!("{}.{zone}", i.service)).or_default().push(i.address);
        }
    }
    let pg: Vec<&InstanceState> = super::postgres::nodes(state).collect();
    let primary: Vec<Ipv4Addr> = pg.iter().filter(|i| i.role == "primary").map(|i| i.address).collect();
    let replicas: Vec<Ipv4Addr> = pg.iter().filter(|i| i.role == "replica").map(|i| i.address).collect();
    if !primary.is_empty() {
        out.insert(format!("writer.db.{zone}"), primary.clone());
        out.insert(format!("reader.db.{zone}"), if replicas.is_empty() { primary } else { replicas });
    }
    out
}

/// The API's failover record: its primary answer (the ALB's nodes) and
/// its secondary, a static maintenance answer (the static-assets site in
/// S3, as a maintenance page is usually served).
pub fn failover_answers(state: &RunState) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let of = |kind: ServiceKind| -> Vec<Ipv4Addr> {
        state.instances.iter().filter(|i| i.service == kind.as_str()).map(|i| i.address).collect()
    };
    let mut secondary = of(ServiceKind::S3);
    secondary.truncate(1);
    (of(ServiceKind::Alb), secondary)
}

/// A client of the server's HTTP API (the zones and record sets).
pub struct Api {
    base: String,
    key: String,
}

impl Api {
    pub fn of(state: &RunState) -> Option<Api> {
        let addr = server(state)?.published.get(&API_PORT)?;
        Some(Api {
            base: format!("http://{addr}/api/v1/servers/localhost"),
            key: state.credentials.route53_api_key.clone(),
        })
    }

    async fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let headers = [("x-api-key", self.key.as_str()), ("content-type", "application/json")];
        let r = request(method, &format!("{}{path}", self.base), &headers, &body, Duration::from_secs(10)).await?;
        if !(200..300).contains(&r.status) {
            return Err(format!("{method} {path} answered {}: {}", r.status, r.body.trim()));
        }
        Ok(serde_json::from_str(&r.body).unwrap_or(Value::Null))
    }

    /// The zone with its SOA and NS, made if it is not there.
    pub async fn ensure_zone(&self, zone: &str, ns: Ipv4Addr, ttl: Duration) -> Result<(), String> {
        let zones = self.call("GET", "/zones", &Value::Null).await?;
        if zones.as_array().is_some_and(|z| z.iter().any(|z| z["name"] == fqdn(zone))) {
            return Ok(());
        }
        let soa = format!("ns1.{zone}. hostmaster.{zone}. 1 10800 3600 604800 {}", ttl.as_secs());
        let body = json!({
            "name": fqdn(zone), "kind": "Native", "soa_edit_api": "INCEPTION-INCREMENT",
            "rrsets": [
                { "name": fqdn(zone), "type": "SOA", "ttl": ttl.as_secs(), "records": [{ "content": soa, "disabled": false }] },
                { "name": fqdn(zone), "type": "NS", "ttl": ttl.as_secs(), "records": [{ "content": format!("ns1.{zone}."), "disabled": false }] },
                { "name": format!("ns1.{zone}."), "type": "A", "ttl": ttl.as_secs(), "records": [{ "content": ns.to_string(), "disabled": false }] },
            ]
        });
        self.call("POST", "/zones", &body).await.map(|_| ())
    }

    /// Replace A record sets in `zone` (an empty list deletes one).
    pub async fn replace(
        &self,
        zone: &str,
        sets: &BTreeMap<String, Vec<Ipv4Addr>>,
        ttl: Duration,
    ) -> Result<(), String> {
        let rrsets: Vec<Value> = sets
            .iter()
            .map(|(name, addrs)| {
                if addrs.is_empty() {
                    json!({ "name": fqdn(name), "type": "A", "changetype": "DELETE" })
                } else {
                    let records: Vec<Value> =
                        addrs.iter().map(|a| json!({ "content": a.to_string(), "disabled": false })).collect();
                    json!({ "name": fqdn(name), "type": "A", "ttl": ttl.as_secs(), "changetype": "REPLACE", "records": records })
                }
            })
            .collect();
        self.call("PATCH", &format!("/zones/{}", fqdn(zone)), &json!({ "rrsets": rrsets })).await.map(|_| ())
    }
}

fn settings(state: &RunState) -> Result<(crate::stack::Route53, Option<String>, Option<String>), String> {
    let stack = state.parsed_stack()?;
    let r = stack.route53.ok_or("the stack has no [service.route53]")?;
    Ok((r, stack.alb.map(|a| a.domain), stack.nlb.map(|n| n.domain)))
}

/// Both zones and every record the stack starts with: the failover record
/// on its primary (readiness showed every node answering).
pub async fn provision(state: &RunState) -> Result<(), String> {
    let (r, domain, nlb) = settings(state)?;
    let api = Api::of(state).ok_or("no DNS server API")?;
    let me = server(state).ok_or("no DNS server")?;
    api.ensure_zone(&r.public_zone, me.address, r.ttl).await?;
    api.ensure_zone(&r.private_zone, me.address, r.ttl).await?;
    api.replace(&r.private_zone, &private_records(state, &r.private_zone), r.ttl).await?;
    if let Some(domain) = &domain {
        let (primary, _) = failover_answers(state);
        api.replace(&r.public_zone, &BTreeMap::from([(domain.clone(), primary)]), r.ttl).await?;
    }
    // The NLB's name starts with every node; the control plane then keeps
    // it to the nodes with a healthy target.
    let nodes: Vec<Ipv4Addr> = super::nlb::nodes(state).map(|i| i.address).collect();
    if let (Some(nlb), false) = (&nlb, nodes.is_empty()) {
        api.replace(&r.public_zone, &BTreeMap::from([(nlb.clone(), nodes)]), r.ttl).await?;
    }
    // Answered over DNS, not only stored.
    let dns = dns_addr(state).ok_or("no published DNS port")?;
    let probe = domain.unwrap_or(format!("ns1.{}", r.public_zone));
    let a = crate::dns::query_a(dns, &probe, Duration::from_secs(10)).await?;
    if a.a.is_empty() {
        return Err(format!("{probe} has no A record after provisioning (rcode {})", a.rcode));
    }
    Ok(())
}

/// Ready when the API answers with the key.
pub async fn probe(state: &RunState) -> Result<(), String> {
    Api::of(state).ok_or("no published API port")?.call("GET", "/zones", &Value::Null).await.map(|_| ())
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    dns_addr(state).map(|a| vec![("ROUTE53_DNS".into(), a.to_string())]).unwrap_or_default()
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Route53;

#[async_trait::async_trait]
impl super::Service for Route53 {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    /// Started with the last services, so that the zones it is provisioned
    /// with name every instance, the ALB's nodes and the API's included.
    fn after_vault(&self) -> bool {
        true
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, _inst: &InstanceState) -> Result<(), String> {
        probe(cx.state).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state).await
    }
    async fn restarted(&self, state: &RunState, _timeout: Duration) -> Result<(), String> {
        provision(state).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageSet;

    #[test]
    fn one_server_in_no_az_answers_at_every_subnets_dot_two_over_udp_and_tcp() {
        let v = crate::services::test_specs(ServiceKind::Route53, ImageSet::Offline);
        assert_eq!(v.len(), 1);
        let s = &v[0];
        assert_eq!((s.network.as_str(), s.address), ("vs-voyager-a-private", Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(s.extra_networks.len(), 5, "the other five subnets");
        assert_eq!(s.extra_addresses["vs-voyager-c-public"], Ipv4Addr::new(10, 0, 103, 2));
        assert_eq!(s.udp, [DNS_PORT]);
        assert!(s.files[0].2.contains("--cache-ttl=0"), "answers follow API changes at once");
        assert!(s.dns.is_empty(), "the resolver asks no one");
        // Every other container resolves through the .2 of its own subnet.
        let pg = crate::services::test_specs(ServiceKind::Postgres, ImageSet::Offline);
        let b = pg.iter().find(|s| s.instance == "postgres-b").unwrap();
        assert_eq!(b.dns, [Ipv4Addr::new(10, 0, 2, 2)]);
    }
}
