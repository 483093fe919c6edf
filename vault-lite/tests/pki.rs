//! PKI: a root CA, roles, and issued certificates that verify against the
//! CA; names outside the role are refused with Vault's message.

mod common;

use serde_json::json;
use vaultrs::api::pki::requests::{GenerateCertificateRequest, GenerateRootRequest, SetRoleRequest};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

fn names(pem: &str) -> (String, Vec<String>) {
    let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = p.parse_x509().unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|g| match g {
                    GeneralName::DNSName(d) => d.to_string(),
                    GeneralName::IPAddress(b) if b.len() == 4 => format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (cn, sans)
}

/// Does `leaf` carry a valid signature by `ca`'s key, and name it as issuer?
fn verifies(leaf: &str, ca: &str) -> bool {
    let (_, lp) = parse_x509_pem(leaf.as_bytes()).unwrap();
    let (_, cp) = parse_x509_pem(ca.as_bytes()).unwrap();
    let (l, c) = (lp.parse_x509().unwrap(), cp.parse_x509().unwrap());
    l.issuer() == c.subject() && l.verify_signature(Some(c.public_key())).is_ok()
}

#[tokio::test]
async fn issued_certificates_verify_against_the_root_and_keep_to_the_role() {
    let u = common::unsealed().await;
    let c = &u.root;
    vaultrs::sys::mount::enable(c, "pki", "pki", None).await.unwrap();
    u.api.write("sys/mounts/pki/tune", &json!({ "max_lease_ttl": "87600h" })).await.unwrap();
    let root = vaultrs::pki::cert::ca::generate(
        c,
        "pki",
        "internal",
        Some(GenerateRootRequest::builder().common_name("Voyager Test Root").ttl("8760h").key_type("ec")),
    )
    .await
    .unwrap()
    .unwrap();
    let ca = root.certificate.clone();
    assert!(verifies(&ca, &ca), "the root is self-signed");
    let (_, cp) = parse_x509_pem(ca.as_bytes()).unwrap();
    let ca_cert = cp.parse_x509().unwrap();
    assert!(ca_cert.is_ca());
    let ca_days = (ca_cert.validity().not_after.timestamp() - ca_cert.validity().not_before.timestamp()) / 86_400;
    assert!((364..=366).contains(&ca_days), "{ca_days}");
    // The CA is readable without a token, as PEM and as JSON.
    let anon = vault_lite::VaultClient::new(&u.url);
    let (status, _) = anon.raw("GET", "pki/ca/pem", None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(anon.read("pki/cert/ca").await.unwrap()["data"]["certificate"], json!(ca));

    vaultrs::pki::role::set(
        c,
        "pki",
        "voyager-internal",
        Some(
            SetRoleRequest::builder()
                .allowed_domains(vec!["voyager.internal".into()])
                .allow_subdomains(true)
                .max_ttl("72h")
                .key_type("ec"),
        ),
    )
    .await
    .unwrap();
    let issued = vaultrs::pki::cert::generate(
        c,
        "pki",
        "voyager-internal",
        Some(
            GenerateCertificateRequest::builder()
                .common_name("api.voyager.internal")
                .alt_names("web.voyager.internal")
                .ip_sans("10.0.1.20")
                .ttl("1h"),
        ),
    )
    .await
    .unwrap();
    assert!(verifies(&issued.certificate, &ca), "the leaf is signed by the root");
    assert_eq!(issued.issuing_ca, ca);
    assert_eq!(issued.ca_chain.as_deref(), Some(&[ca.clone()][..]));
    assert_eq!(issued.private_key_type, "ec");
    assert!(issued.private_key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let (cn, sans) = names(&issued.certificate);
    assert_eq!(cn, "api.voyager.internal");
    assert_eq!(sans, ["api.voyager.internal", "web.voyager.internal", "10.0.1.20"]);
    let (_, lp) = parse_x509_pem(issued.certificate.as_bytes()).unwrap();
    let leaf = lp.parse_x509().unwrap();
    assert_eq!(leaf.raw_serial_as_string(), issued.serial_number);
    assert_eq!(leaf.validity().not_after.timestamp() as u64, issued.expiration.unwrap());
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!((3600..=3630).contains(&lifetime), "{lifetime}");
    // The issued certificate can be read back by serial, without a token.
    let by_serial = anon.read(&format!("pki/cert/{}", issued.serial_number)).await.unwrap();
    assert_eq!(by_serial["data"]["certificate"], json!(issued.certificate));

    // Outside the role: refused with Vault's messages.
    let issue = |cn: &'static str, alt: Option<&'static str>| {
        let mut b = GenerateCertificateRequest::builder();
        b.common_name(cn);
        if let Some(a) = alt {
            b.alt_names(a);
        }
        async move { vaultrs::pki::cert::generate(c, "pki", "voyager-internal", Some(&mut b)).await }
    };
    let e = issue("api.example.com", None).await.unwrap_err();
    assert_eq!(common::code(&e), 400);
    assert_eq!(common::errors(&e), ["common name api.example.com not allowed by this role"]);
    let e = issue("voyager.internal", None).await.unwrap_err();
    assert_eq!(common::errors(&e), ["common name voyager.internal not allowed by this role"]);
    let e = issue("ok.voyager.internal", Some("evil.example.com")).await.unwrap_err();
    assert_eq!(common::errors(&e), ["subject alternate name evil.example.com not allowed by this role"]);

    // A TTL beyond the role's max_ttl is cut to it, with a warning.
    let long = u
        .api
        .write("pki/issue/voyager-internal", &json!({ "common_name": "x.voyager.internal", "ttl": "1000h" }))
        .await
        .unwrap();
    let left = long["data"]["expiration"].as_u64().unwrap()
        - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((72 * 3600 - 60..=72 * 3600).contains(&left), "{left}");
    assert!(!long["warnings"].as_array().unwrap().is_empty());

    // An RSA role: PKCS#1 key, still chained to the EC root.
    u.api
        .write(
            "pki/roles/rsa",
            &json!({ "allowed_domains": "voyager.internal", "allow_subdomains": true, "key_type": "rsa" }),
        )
        .await
        .unwrap();
    let rsa = u.api.write("pki/issue/rsa", &json!({ "common_name": "db.voyager.internal" })).await.unwrap();
    assert!(verifies(rsa["data"]["certificate"].as_str().unwrap(), &ca));
    assert!(rsa["data"]["private_key"].as_str().unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
}
