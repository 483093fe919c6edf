//! The validated stack: what production looks like, as plain values.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use super::cidr::Cidr;
use super::kubernetes::Kubernetes;

/// A whole stack after validation. Every address is fixed and every name unique;
/// nothing downstream re-checks what [`super::parse`] proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    pub vpc: Cidr,
    /// One-way latency between any two AZs, applied from `up` (AWS quotes
    /// single-digit milliseconds between AZs of a region).
    pub inter_az_latency: Duration,
    pub azs: Vec<Az>,
    pub services: Vec<Service>,
    /// Node groups and cluster settings, when the stack runs Kubernetes.
    pub kubernetes: Option<Kubernetes>,
    /// RDS's settings, when the stack runs PostgreSQL.
    pub rds: Option<Rds>,
    /// The load balancer's settings, when the stack runs one.
    pub alb: Option<super::edge::Alb>,
    /// The NLB's settings, when the stack runs one.
    pub nlb: Option<super::nlb::Nlb>,
    /// Route 53's settings, when the stack runs its DNS.
    pub route53: Option<super::edge::Route53>,
}

/// How RDS runs a stack's PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rds {
    /// How long the primary must look lost before the control plane fails
    /// over to the standby.
    pub failover_detection: Duration,
    /// The longest a committed transaction waits before its WAL segment is
    /// archived to the backups bucket: the point-in-time recovery's RPO.
    pub archive_timeout: Duration,
}

/// RDS documents a Multi-AZ failover as typically 60 to 120 s, most of it
/// detection and the DNS change. Here promotion takes about a second and
/// the endpoint moves at once, so 30 s of detection lands a whole failover
/// at the fast end of RDS's range; CI shortens it in its own stack file.
pub const DEFAULT_FAILOVER_DETECTION: Duration = Duration::from_secs(30);

/// RDS uploads a database's transaction logs to S3 every five minutes,
/// which is why its latest restorable time trails by up to five minutes.
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The inter-AZ latency of a stack file that does not say.
pub const DEFAULT_INTER_AZ_LATENCY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Az {
    pub name: String,
    pub private: Cidr,
    pub public: Cidr,
}

/// Which of an AZ's two subnets an instance sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Private,
    Public,
}

/// The services the simulator knows how to run. A stack file naming anything
/// else is rejected with this list, so adding a service starts here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    Alb,
    Api,
    Auth0,
    Influxdb,
    Kafka,
    Kubernetes,
    Nlb,
    Postgres,
    Prometheus,
    Route53,
    S3,
    Vault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: ServiceKind,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub az: String,
    pub tier: Tier,
    pub address: Ipv4Addr,
    /// One of [`ServiceKind::roles`]; the first one when the file says none.
    pub role: String,
    /// The node group of a Kubernetes worker.
    pub group: Option<String>,
}

impl Stack {
    pub fn az(&self, name: &str) -> Option<&Az> {
        self.azs.iter().find(|a| a.name == name)
    }

    pub fn service(&self, kind: ServiceKind) -> Option<&Service> {
        self.services.iter().find(|s| s.kind == kind)
    }

    /// Whether the API runs as a Deployment on the stack's cluster rather
    /// than as a container per instance: it does whenever the stack has a
    /// cluster, and then its declared instances only say how many replicas
    /// (the scheduler places them, spread over the zones).
    pub fn api_on_kubernetes(&self) -> bool {
        self.kubernetes.is_some() && self.service(ServiceKind::Api).is_some()
    }

    /// Every instance that is a container of its own: all of them but the
    /// API's when it runs as pods.
    pub fn containers(&self) -> impl Iterator<Item = &Instance> {
        let pods = self.api_on_kubernetes();
        self.services.iter().filter(move |s| !(pods && s.kind == ServiceKind::Api)).flat_map(|s| &s.instances)
    }

    /// Every subnet of the stack, in AZ order, private before public.
    pub fn subnets(&self) -> impl Iterator<Item = (&Az, Tier, Cidr)> {
        self.azs.iter().flat_map(|az| [(az, Tier::Private, az.private), (az, Tier::Public, az.public)])
    }

    /// The instances of a service with the given role.
    pub fn with_role(&self, kind: ServiceKind, role: &str) -> Vec<&Instance> {
        self.service(kind).map(|s| s.instances.iter().filter(|i| i.role == role).collect()).unwrap_or_default()
    }

    pub fn subnet_of(&self, instance: &Instance) -> Cidr {
        let az = self.az(&instance.az).expect("validated: instance AZ exists");
        az.subnet(instance.tier)
    }

    /// Keep only the named services (for `up --only`). Unknown names are the
    /// caller's to report, because only it knows where the list came from.
    pub fn only(&self, kinds: &[ServiceKind]) -> Stack {
        let mut s = self.clone();
        s.services.retain(|svc| kinds.contains(&svc.kind));
        if !kinds.contains(&ServiceKind::Kubernetes) {
            s.kubernetes = None;
        }
        if !kinds.contains(&ServiceKind::Postgres) {
            s.rds = None;
        }
        if !kinds.contains(&ServiceKind::Alb) {
            s.alb = None;
        }
        if !kinds.contains(&ServiceKind::Nlb) {
            s.nlb = None;
        }
        if !kinds.contains(&ServiceKind::Route53) {
            s.route53 = None;
        }
        s
    }

    /// The same stack moved to another VPC of the same size: every subnet and
    /// address keeps its offset. Lets tests run several stacks side by side,
    /// since Docker refuses two networks with overlapping subnets.
    pub fn relocated(&self, vpc: Cidr) -> Result<Stack, String> {
        if vpc.prefix() != self.vpc.prefix() {
            return Err(format!("cannot move a /{} VPC into {vpc}: the prefix lengths differ", self.vpc.prefix()));
        }
        let shift = |addr: Ipv4Addr| vpc.nth(self.vpc.offset_of(addr).expect("validated: inside VPC"));
        let move_net = |c: Cidr| Cidr::new(shift(c.network()), c.prefix()).expect("offset keeps alignment");
        let mut s = self.clone();
        s.vpc = vpc;
        for az in &mut s.azs {
            az.private = move_net(az.private);
            az.public = move_net(az.public);
        }
        for inst in s.services.iter_mut().flat_map(|svc| svc.instances.iter_mut()) {
            inst.address = shift(inst.address);
        }
        if let Some(k) = &mut s.kubernetes {
            k.service_cidr = super::kubernetes::service_cidr_for(vpc);
        }
        Ok(s)
    }

    /// The stack as a stack file. Parsing the result gives back an equal
    /// stack (a property test holds us to it).
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "name = \"{}\"\n\n[vpc]\ncidr = \"{}\"\ninter_az_latency = \"{}us\"\n",
            self.name,
            self.vpc,
            self.inter_az_latency.as_micros()
        );
        for az in &self.azs {
            out += &format!("\n[az.{}]\nprivate = \"{}\"\npublic = \"{}\"\n", az.name, az.private, az.public);
        }
        for svc in &self.services {
            if let (ServiceKind::Kubernetes, Some(k)) = (svc.kind, &self.kubernetes) {
                out += &kubernetes_toml(k);
            }
            if let (ServiceKind::Postgres, Some(r)) = (svc.kind, &self.rds) {
                out += &format!(
                    "\n[service.postgres]\nfailover_detection = \"{}ms\"\narchive_timeout = \"{}ms\"\n",
                    r.failover_detection.as_millis(),
                    r.archive_timeout.as_millis()
                );
            }
            if let (ServiceKind::Alb, Some(a)) = (svc.kind, &self.alb) {
                out += &super::edge::alb_toml(a);
            }
            if let (ServiceKind::Nlb, Some(n)) = (svc.kind, &self.nlb) {
                out += &super::nlb::nlb_toml(n);
            }
            if let (ServiceKind::Route53, Some(r)) = (svc.kind, &self.route53) {
                out += &super::edge::route53_toml(r);
            }
            for inst in &svc.instances {
                out += &format!(
                    "\n[[service.{}.instance]]\nname = \"{}\"\naz = \"{}\"\nsubnet = \"{}\"\naddress = \"{}\"\nrole = \"{}\"\n",
                    svc.kind, inst.name, inst.az, inst.tier, inst.address, inst.role
                );
                if let Some(g) = &inst.group {
                    out += &format!("group = \"{g}\"\n");
                }
            }
        }
        out
    }

    /// The Kubernetes nodes of an AZ, in declaration order: the order their
    /// pod address blocks are handed out in.
    pub fn kube_nodes_in(&self, az: &str) -> Vec<&Instance> {
        self.service(ServiceKind::Kubernetes)
            .map(|s| s.instances.iter().filter(|i| i.az == az).collect())
            .unwrap_or_default()
    }

    /// The VPC addresses a Kubernetes node gives its pods.
    pub fn pod_block(&self, instance: &Instance) -> Option<Cidr> {
        let k = self.kubernetes.as_ref()?;
        let index = self.kube_nodes_in(&instance.az).iter().position(|i| i.name == instance.name)?;
        let az = self.az(&instance.az)?;
        super::kubernetes::pod_block(az.private, k.pods_per_node, index)
    }
}

/// A stack file's `[service.kubernetes]` settings and node groups.
fn kubernetes_toml(k: &Kubernetes) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "\n[service.kubernetes]\nnode_monitor_grace_period = \"{}ms\"\nnot_ready_toleration = \"{}ms\"\npods_per_node = {}\nservice_cidr = \"{}\"\nregion = \"{}\"\n",
        k.node_monitor_grace_period.as_millis(),
        k.not_ready_toleration.as_millis(),
        k.pods_per_node,
        k.service_cidr,
        k.region
    );
    for g in &k.node_groups {
        let types: Vec<String> = g.instance_types.iter().map(|t| q(t)).collect();
        let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{} = {}", q(k), q(v))).collect();
        let taints: Vec<String> = g.taints.iter().map(|t| q(&t.to_string())).collect();
        out += &format!(
            "\n[[service.kubernetes.node_group]]\nname = {}\ninstance_types = [{}]\nlabels = {{ {} }}\ntaints = [{}]\n",
            q(&g.name),
            types.join(", "),
            labels.join(", "),
            taints.join(", ")
        );
    }
    out
}

impl Az {
    pub fn subnet(&self, tier: Tier) -> Cidr {
        match tier {
            Tier::Private => self.private,
            Tier::Public => self.public,
        }
    }
}

impl ServiceKind {
    pub const ALL: &'static [ServiceKind] = &[
        ServiceKind::Alb,
        ServiceKind::Api,
        ServiceKind::Auth0,
        ServiceKind::Influxdb,
        ServiceKind::Kafka,
        ServiceKind::Kubernetes,
        ServiceKind::Nlb,
        ServiceKind::Postgres,
        ServiceKind::Prometheus,
        ServiceKind::Route53,
        ServiceKind::S3,
        ServiceKind::Vault,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceKind::Alb => "alb",
            ServiceKind::Api => "api",
            ServiceKind::Auth0 => "auth0",
            ServiceKind::Influxdb => "influxdb",
            ServiceKind::Kafka => "kafka",
            ServiceKind::Kubernetes => "kubernetes",
            ServiceKind::Nlb => "nlb",
            ServiceKind::Postgres => "postgres",
            ServiceKind::Prometheus => "prometheus",
            ServiceKind::Route53 => "route53",
            ServiceKind::Vault => "vault",
            ServiceKind::S3 => "s3",
        }
    }

    /// The roles an instance of this service can have; the first is the
    /// default.
    pub fn roles(&self) -> &'static [&'static str] {
        match self {
            // Brokers serve clients; controllers form the KRaft quorum. With
            // no controllers declared, every broker is also a voter.
            ServiceKind::Kafka => &["broker", "controller"],
            ServiceKind::Postgres => &["primary", "standby", "replica"],
            ServiceKind::Influxdb => &["server"],
            // Control-plane nodes run etcd and the API server; workers come
            // from node groups.
            ServiceKind::Kubernetes => &["control-plane", "worker"],
            ServiceKind::Auth0 => &["tenant"],
            ServiceKind::Alb | ServiceKind::Nlb => &["node"],
            ServiceKind::Route53 => &["resolver"],
            ServiceKind::Vault | ServiceKind::S3 | ServiceKind::Api | ServiceKind::Prometheus => &["server"],
        }
    }

    /// The name an instance gets when the file gives none. Roles that change
    /// at run time (a PostgreSQL standby becomes primary) stay out of it.
    pub fn derived_name(&self, role: &str, group: Option<&str>, az: &str) -> String {
        match self {
            ServiceKind::Kafka if role != "broker" => format!("{self}-{role}-{az}"),
            ServiceKind::Kubernetes => match group {
                Some(g) => format!("kube-{g}-{az}"),
                None => format!("kube-cp-{az}"),
            },
            _ => format!("{self}-{az}"),
        }
    }

    /// The load balancers: their nodes sit in public subnets.
    pub fn faces_the_internet(&self) -> bool {
        matches!(self, ServiceKind::Alb | ServiceKind::Nlb)
    }

    pub fn known_list() -> String {
        ServiceKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ServiceKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown service `{s}`; known services: {}", ServiceKind::known_list()))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Private => "private",
            Tier::Public => "public",
        })
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "private" => Ok(Tier::Private),
            "public" => Ok(Tier::Public),
            _ => Err(format!("unknown subnet `{s}`; each AZ has `private` and `public`")),
        }
    }
}
