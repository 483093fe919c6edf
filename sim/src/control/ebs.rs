//! EBS for the cluster: the provisioner behind the `gp3` StorageClass.
//! A volume is made in the zone of the node its first pod was scheduled to
//! (WaitForFirstConsumer), as a directory of that AZ's block storage (a
//! Docker volume every node of the AZ mounts), and bound to the zone by
//! node affinity: a pod using it can run on any node of its zone and on no
//! other, as with EBS. It speaks the external-provisioner protocol: claims
//! the PV controller marked for [`PROVISIONER`] and the scheduler gave a
//! node get a pre-bound PersistentVolume; released volumes are deleted.
//!
//! `decide` is pure (what to do given what was observed); `tick` observes
//! through the API, applies, and returns what it did.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams};

use crate::services::kubernetes::actions::{PROVISIONER, STORAGE_CLASS};
use crate::services::kubernetes::api::create_or_keep;
use crate::services::kubernetes::node::EBS_ROOT;

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const ZONE: &str = "topology.kubernetes.io/zone";

/// A claim as the provisioner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub storage_class: Option<String>,
    /// Who the PV controller said provisions it.
    pub provisioner: Option<String>,
    /// Where the scheduler put its first pod.
    pub selected_node: Option<String>,
    pub bound_to: Option<String>,
    pub request: Option<String>,
    pub access_modes: Vec<String>,
}

/// A volume this provisioner made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub phase: String,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make a volume for a claim in a zone.
    Create { volume: String, claim: Claim, zone: String },
    /// A released volume goes (its data stays in the AZ's storage until
    /// `down`, as a deleted EBS volume's blocks are the provider's to reuse).
    Delete { volume: String, zone: Option<String> },
    /// A claim EBS cannot serve, and why (said once per claim).
    Refuse { claim: Claim, reason: String },
}

/// The volume name of a claim: as the external provisioners name them.
pub fn volume_name(claim: &Claim) -> String {
    format!("pvc-{}", claim.uid)
}

pub fn decide(claims: &[Claim], volumes: &[Volume], node_zones: &BTreeMap<String, String>) -> Vec<Action> {
    let mut out = vec![];
    for c in claims {
        let ours = c.provisioner.as_deref() == Some(PROVISIONER);
        if !ours || c.bound_to.is_some() {
            continue;
        }
        let Some(node) = &c.selected_node else { continue };
        if volumes.iter().any(|v| v.name == volume_name(c)) {
            continue;
        }
        if c.access_modes.iter().any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany") {
            out.push(Action::Refuse {
                claim: c.clone(),
                reason: "EBS volumes attach to one node at a time (ReadWriteOnce)".into(),
            });
            continue;
        }
        match node_zones.get(node) {
            Some(zone) => out.push(Action::Create { volume: volume_name(c), claim: c.clone(), zone: zone.clone() }),
            None => out.push(Action::Refuse { claim: c.clone(), reason: format!("node {node} has no zone label") }),
        }
    }
    for v in volumes.iter().filter(|v| v.phase == "Released") {
        out.push(Action::Delete { volume: v.name.clone(), zone: v.zone.clone() });
    }
    out
}

fn claim_of(pvc: &PersistentVolumeClaim) -> Option<Claim> {
    let ann = pvc.metadata.annotations.clone().unwrap_or_default();
    let spec = pvc.spec.as_ref()?;
    Some(Claim {
        namespace: pvc.metadata.namespace.clone()?,
        name: pvc.metadata.name.clone()?,
        uid: pvc.metadata.uid.clone()?,
        storage_class: spec.storage_class_name.clone(),
        provisioner: ann.get(STORAGE_PROVISIONER).cloned(),
        selected_node: ann.get(SELECTED_NODE).cloned(),
        bound_to: spec.volume_name.clone().filter(|v| !v.is_empty()),
        request: spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone()),
        access_modes: spec.access_modes.clone().unwrap_or_default(),
    })
}

fn volume_of(pv: &PersistentVolume) -> Option<Volume> {
    let ann = pv.metadata.annotations.clone().unwrap_or_default();
    if ann.get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER) {
        return None;
    }
    Some(Volume {
        name: pv.metadata.name.clone()?,
        phase: pv.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default(),
        zone: pv.metadata.labels.as_ref().and_then(|l| l.get(ZONE).cloned()),
    })
}

/// The PersistentVolume for a claim, bound to it and to its zone.
pub fn persistent_volume(volume: &str, claim: &Claim, zone: &str) -> serde_json::Value {
    let modes =
        if claim.access_modes.is_empty() { vec!["ReadWriteOnce".to_string()] } else { claim.access_modes.clone() };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume,
            "annotations": { PROVISIONED_BY: PROVISIONER },
            "labels": { ZONE: zone }
        },
        "spec": {
            "capacity": { "storage": claim.request.clone().unwrap_or_else(|| "1Gi".into()) },
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": claim.storage_class.clone().unwrap_or_else(|| STORAGE_CLASS.into()),
            "volumeMode": "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace,
                "name": claim.name,
                "uid": claim.uid
            },
            "hostPath": { "path": format!("{EBS_ROOT}/{volume}"), "type": "DirectoryOrCreate" },
            "nodeAffinity": { "required": { "nodeSelectorTerms": [
                { "matchExpressions": [ { "key": ZONE, "operator": "In", "values": [zone] } ] }
            ] } }
        }
    })
}

/// One pass: observe, decide, apply. Returns a line per thing done.
pub async fn tick(
    client: &kube::Client,
    refused: &mut std::collections::BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default();
    let claims: Vec<Claim> =
        pvcs.list(&lp).await.map_err(|e| format!("listing claims: {e}"))?.items.iter().filter_map(claim_of).collect();
    let volumes: Vec<Volume> =
        pvs.list(&lp).await.map_err(|e| format!("listing volumes: {e}"))?.items.iter().filter_map(volume_of).collect();
    // Nodes are big objects; only a claim waiting for a volume needs them.
    let waiting = claims
        .iter()
        .any(|c| c.provisioner.as_deref() == Some(PROVISIONER) && c.bound_to.is_none() && c.selected_node.is_some());
    let zones: BTreeMap<String, String> = if waiting {
        nodes
            .list(&lp)
            .await
            .map_err(|e| format!("listing nodes: {e}"))?
            .items
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.as_ref()?.get(ZONE)?.clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut done = vec![];
    for action in decide(&claims, &volumes, &zones) {
        match action {
            Action::Create { volume, claim, zone } => {
                let body = persistent_volume(&volume, &claim, &zone);
                if create_or_keep(&pvs, &volume, body).await? {
                    done.push(format!("ebs: created {volume} in {zone} for {}/{}", claim.namespace, claim.name))
                }
            }
            Action::Delete { volume, zone } => match pvs.delete(&volume, &DeleteParams::default()).await {
                Ok(_) => done.push(format!("ebs: deleted released {volume} ({})", zone.unwrap_or_default())),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(format!("deleting {volume}: {e}")),
            },
            Action::Refuse { claim, reason } => {
                if refused.insert(claim.uid.clone()) {
                    done.push(format!("ebs: cannot provision {}/{}: {reason}", claim.namespace, claim.name));
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str) -> Claim {
        Claim {
            namespace: "default".into(),
            name: format!("data-{uid}"),
            uid: uid.into(),
            storage_class: Some(STORAGE_CLASS.into()),
            provisioner: Some(PROVISIONER.into()),
            selected_node: Some("kube-general-purpose-b".into()),
            bound_to: None,
            request: Some("1Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
        }
    }

    fn zones() -> BTreeMap<String, String> {
        BTreeMap::from([("kube-general-purpose-b".to_string(), "us-east-1b".to_string())])
    }

    #[test]
    fn a_scheduled_claim_gets_a_volume_in_its_nodes_zone() {
        let a = decide(&[claim("u1")], &[], &zones());
        assert_eq!(a, vec![Action::Create { volume: "pvc-u1".into(), claim: claim("u1"), zone: "us-east-1b".into() }]);
        let pv = persistent_volume("pvc-u1", &claim("u1"), "us-east-1b");
        let term = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(term["key"], ZONE);
        assert_eq!(term["values"][0], "us-east-1b");
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
    }

    #[test]
    fn claims_not_ours_unscheduled_bound_or_already_made_are_left_alone() {
        let mut other = claim("u2");
        other.provisioner = Some("kubernetes.io/no-provisioner".into());
        let mut waiting = claim("u3");
        waiting.selected_node = None;
        let mut bound = claim("u4");
        bound.bound_to = Some("pvc-u4".into());
        let made = claim("u5");
        let existing = vec![Volume { name: "pvc-u5".into(), phase: "Available".into(), zone: None }];
        assert_eq!(decide(&[other, waiting, bound, made], &existing, &zones()), vec![]);
    }

    #[test]
    fn shared_access_is_refused_and_released_volumes_go() {
        let mut rwx = claim("u6");
        rwx.access_modes = vec!["ReadWriteMany".into()];
        let released =
            vec![Volume { name: "pvc-old".into(), phase: "Released".into(), zone: Some("us-east-1a".into()) }];
        let a = decide(&[rwx], &released, &zones());
        assert!(matches!(&a[0], Action::Refuse { reason, .. } if reason.contains("ReadWriteOnce")));
        assert_eq!(a[1], Action::Delete { volume: "pvc-old".into(), zone: Some("us-east-1a".into()) });
    }
}
