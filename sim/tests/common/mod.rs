//! What the Docker tests share: the production stack moved to a VPC range of
//! the test's own (Docker refuses overlapping subnets, and tests run in
//! parallel) and renamed, started with the offline images.

#![allow(dead_code)]

use voyager_sim::harness::{builtin_stack, BUILTIN_STACK};
use voyager_sim::{ImageSource, Progress, RunningStack, ServiceKind, Sim, Stack};

/// The production stack in 10.OCTET.0.0/16, named `name`.
pub fn stack(name: &str, octet: u8) -> Stack {
    let mut s = builtin_stack().relocated(format!("10.{octet}.0.0/16").parse().unwrap()).unwrap();
    s.name = name.to_string();
    s
}

/// The production stack with EKS's control plane, a node per AZ (the
/// built-in file runs one, in c, to fit two cores), in 10.OCTET.0.0/16.
pub fn stack_with_ha_control_plane(name: &str, octet: u8) -> Stack {
    let text = format!(
        "{BUILTIN_STACK}\n{}",
        ["a", "b"]
            .iter()
            .zip(["10.0.1.70", "10.0.2.70"])
            .map(|(az, addr)| format!(
                "[[service.kubernetes.instance]]\nrole = \"control-plane\"\naz = \"{az}\"\naddress = \"{addr}\"\n"
            ))
            .collect::<String>()
    );
    let mut s = voyager_sim::stack::parse_stack(std::path::Path::new("<built-in + two control-plane nodes>"), &text)
        .unwrap()
        .relocated(format!("10.{octet}.0.0/16").parse().unwrap())
        .unwrap();
    s.name = name.to_string();
    s
}

/// A `Sim` for that stack, limited to `only` (all services when empty).
pub fn sim(name: &str, octet: u8, only: &[ServiceKind]) -> Sim {
    let sim = Sim::new(stack(name, octet)).with_images(ImageSource::Offline).with_progress(Progress::stderr());
    if only.is_empty() {
        sim
    } else {
        sim.with_only(only)
    }
}

pub async fn start(name: &str, octet: u8, only: &[ServiceKind]) -> RunningStack {
    sim(name, octet, only).start().await.unwrap()
}

/// An aws-sdk-s3 client for the stack's S3, configured from what `env`
/// exports, as an application's would be.
pub fn s3_client(env: &std::collections::BTreeMap<String, String>) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let creds =
        Credentials::new(&env["AWS_ACCESS_KEY_ID"], &env["AWS_SECRET_ACCESS_KEY"], None, None, "voyager-sim env");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(&env["AWS_ENDPOINT_URL"])
        .region(Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(creds)
        // An IP endpoint has no per-bucket host names.
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A machine-to-machine token from the stack's tenant, for the client
/// `env` exports, as an application on the host would get one.
pub async fn tenant_token(env: &std::collections::BTreeMap<String, String>) -> String {
    voyager_sim::services::auth0::client_token(env).await.unwrap()
}
