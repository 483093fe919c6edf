//! Prometheus's view of the Kubernetes tier, as a cluster's own monitoring
//! has it: kube-state-metrics for what the API believes (pods ready, nodes'
//! conditions, each node's zone), and the API servers' and kubelets' own
//! endpoints for whether each answers at all.
//!
//! All three read the cluster as one read-only identity, a service account
//! made for it before Prometheus starts, not the admin credentials `env`
//! hands the user: a scrape config holds what a dashboard could leak.
//! kube-state-metrics runs inside the Prometheus container (offline image
//! only) and reaches the API through the regional endpoint in its own AZ,
//! so it keeps answering while another AZ is lost.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::Api;

use crate::services::kubernetes::api::create_or_keep;
use crate::services::kubernetes::{ClusterPlan, API_NAME, API_PORT};
use crate::state::{KubeReader, RunState};

/// The service account (in kube-system), its role and its token's secret.
pub const READER: &str = "voyager-prometheus";
const NAMESPACE: &str = "kube-system";
/// kube-state-metrics' metrics, inside the Prometheus container only.
pub const KSM_PORT: u16 = 8080;
pub const KUBELET_PORT: u16 = 10250;
pub const TOKEN_FILE: &str = "/etc/voyager/kube-token";
pub const CA_FILE: &str = "/etc/voyager/kube-ca.crt";
pub const KUBECONFIG_FILE: &str = "/etc/voyager/kubeconfig";
/// The node label kube-state-metrics is allowed to export, so that a
/// pod's or node's series can be summed per zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The scrape settings of the Kubernetes jobs, after their `job_name`.
pub fn job_settings(job: &str) -> String {
    let tls = match job {
        "kubernetes-apiservers" => format!("{{ca_file: {CA_FILE}}}"),
        // kubeadm's kubelets serve a certificate they signed themselves
        // (no serverTLSBootstrap), so there is no CA to check it against;
        // the token still has to pass the API's authorisation.
        "kubelet" => "{insecure_skip_verify: true}".to_string(),
        _ => return String::new(),
    };
    format!("    scheme: https\n    authorization: {{credentials_file: {TOKEN_FILE}}}\n    tls_config: {tls}\n")
}

/// kube-state-metrics' kubeconfig: the reader's token, the cluster's CA,
/// and the regional endpoint's address in Prometheus's own AZ, checked
/// against the name the API's certificate carries.
pub fn kubeconfig(plan: &ClusterPlan, az: &str) -> String {
    let server = plan.endpoint_in(az);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://{server}:{API_PORT}\n    \
         certificate-authority: {CA_FILE}\n    tls-server-name: {API_NAME}\nusers:\n- name: {READER}\n  user:\n    \
         tokenFile: {TOKEN_FILE}\ncontexts:\n- name: {READER}\n  context: {{cluster: {name}, user: {READER}}}\n\
         current-context: {READER}\n",
        name = plan.name
    )
}

/// What the reader may do: read pods and nodes (kube-state-metrics lists
/// and watches them), a kubelet's metrics, and the API servers' `/metrics`.
fn role() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": READER },
        "rules": [
            { "apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"] },
            { "nonResourceURLs": ["/metrics"], "verbs": ["get"] }
        ]
    })
}

/// Make the reader (idempotent) and wait for its token: the token
/// controller fills the secret a moment after it is made.
pub async fn make_reader(state: &RunState) -> Result<KubeReader, String> {
    let ep = crate::services::kubernetes::endpoint(state).ok_or("the cluster's kubeconfig is not written")?;
    let client = ep.client().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    let meta = serde_json::json!({ "name": READER, "namespace": NAMESPACE });
    create_or_keep(&accounts, "the reader's service account", serde_json::json!({ "metadata": meta })).await?;
    create_or_keep(&Api::<ClusterRole>::all(client.clone()), "the reader's ClusterRole", role()).await?;
    create_or_keep(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        "the reader's ClusterRoleBinding",
        serde_json::json!({
            "metadata": { "name": READER },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER },
            "subjects": [{ "kind": "ServiceAccount", "name": READER, "namespace": NAMESPACE }]
        }),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    create_or_keep(
        &secrets,
        "the reader's token secret",
        serde_json::json!({
            "metadata": {
                "name": READER,
                "namespace": NAMESPACE,
                "annotations": { "kubernetes.io/service-account.name": READER }
            },
            "type": "kubernetes.io/service-account-token"
        }),
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = secrets.get(READER).await.map_err(|e| format!("reading the reader's token secret: {e}"))?;
        let field =
            |k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
        if let (Some(token), Some(ca)) = (field("token"), field("ca.crt")) {
            return Ok(KubeReader { token, ca });
        }
        if std::time::Instant::now() >= deadline {
            return Err("the token controller did not fill the reader's token secret within 60s".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The files the Kubernetes jobs and kube-state-metrics read.
pub fn files(reader: &KubeReader, plan: &ClusterPlan, az: &str, offline: bool) -> Vec<(String, u32, String)> {
    // Readable by the server's own user, in a container that runs nothing
    // else, like the database exporters' password.
    let mut out =
        vec![(TOKEN_FILE.to_string(), 0o644, reader.token.clone()), (CA_FILE.to_string(), 0o644, reader.ca.clone())];
    if offline {
        out.push((KUBECONFIG_FILE.to_string(), 0o644, kubeconfig(plan, az)));
    }
    out
}

/// kube-state-metrics' command line (the entrypoint starts it when given).
pub fn ksm_args() -> String {
    format!(
        "--kubeconfig={KUBECONFIG_FILE} --host=127.0.0.1 --port={KSM_PORT} --telemetry-host=127.0.0.1 \
         --telemetry-port={} --resources=pods,nodes --metric-labels-allowlist=nodes=[{ZONE_LABEL}]",
        KSM_PORT + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporters_kubeconfig_reaches_the_api_in_its_own_az_by_the_certificates_name() {
        let stack = crate::harness::builtin_stack();
        let plan = ClusterPlan::of(&stack).expect("the built-in stack runs Kubernetes");
        let k = kubeconfig(&plan, "c");
        assert!(k.contains(&format!("server: https://{}:{API_PORT}", plan.endpoint_in("c"))), "{k}");
        assert!(k.contains(&format!("tls-server-name: {API_NAME}")), "{k}");
        assert!(k.contains(&format!("tokenFile: {TOKEN_FILE}")), "{k}");
        // A client library reads it as the file it means to be.
        let kc = kube::config::Kubeconfig::from_yaml(&k).expect("kube-rs reads it");
        assert_eq!(kc.current_context.as_deref(), Some(READER));
    }

    #[test]
    fn the_reader_may_read_and_nothing_else() {
        let r = role();
        for rule in r["rules"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(["get", "list", "watch"].contains(&verb.as_str().unwrap()), "{rule}");
            }
        }
    }
}
