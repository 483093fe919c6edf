//! The PKI secrets engine: one root CA per mount
//! (`root/generate/{internal,exported}`), `config/urls`, roles that say
//! which names may be issued, `issue/<role>` for real X.509 certificates
//! signed by the CA (rcgen over ring; RSA keys from the `rsa` crate, as ring
//! cannot generate them), and the CA and issued certificates for reading.
//! A name the role does not allow is refused with Vault's message.
//! **No I/O.**

use std::collections::BTreeMap;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{get_bool, get_list, get_str, get_ttl, get_u64, ApiError, Operation, Reply, Request, Result, Secret};
use crate::clock;
use crate::core::Ctx;
use crate::random;

#[derive(Serialize, Deserialize, Default)]
pub struct PkiStore {
    pub ca: Option<Ca>,
    pub urls: Urls,
    pub roles: BTreeMap<String, PkiRole>,
    /// Issued certificates (PEM) by serial number.
    pub certs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Ca {
    pub certificate: String,
    /// PKCS#8 PEM.
    pub key: String,
    pub key_type: String,
    pub common_name: String,
    pub serial_number: String,
    pub not_after: u64,
    pub issuer_id: String,
    pub issuer_name: String,
    pub key_id: String,
}

#[derive(Serialize, Deserialize, Clone, Default)]
pub struct Urls {
    pub issuing_certificates: Vec<String>,
    pub crl_distribution_points: Vec<String>,
    pub ocsp_servers: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct PkiRole {
    pub allowed_domains: Vec<String>,
    pub allow_subdomains: bool,
    pub allow_bare_domains: bool,
    pub allow_any_name: bool,
    pub allow_localhost: bool,
    pub allow_ip_sans: bool,
    pub allow_glob_domains: bool,
    pub server_flag: bool,
    pub client_flag: bool,
    pub key_type: String,
    pub key_bits: u64,
    pub ttl: u64,
    pub max_ttl: u64,
    pub organization: Vec<String>,
    pub ou: Vec<String>,
    pub no_store: bool,
}

impl Default for PkiRole {
    fn default() -> PkiRole {
        PkiRole {
            allowed_domains: vec![],
            allow_subdomains: false,
            allow_bare_domains: false,
            allow_any_name: false,
            allow_localhost: true,
            allow_ip_sans: true,
            allow_glob_domains: false,
            server_flag: true,
            client_flag: true,
            key_type: "rsa".into(),
            key_bits: 0,
            ttl: 0,
            max_ttl: 0,
            organization: vec![],
            ou: vec![],
            no_store: false,
        }
    }
}

impl PkiRole {
    fn describe(&self) -> Value {
        json!({
            "allowed_domains": self.allowed_domains,
            "allow_subdomains": self.allow_subdomains,
            "allow_bare_domains": self.allow_bare_domains,
            "allow_any_name": self.allow_any_name,
            "allow_localhost": self.allow_localhost,
            "allow_ip_sans": self.allow_ip_sans,
            "allow_glob_domains": self.allow_glob_domains,
            "allow_wildcard_certificates": true,
            "allow_token_displayname": false,
            "allowed_domains_template": false,
            "allowed_other_sans": [],
            "allowed_serial_numbers": [],
            "allowed_uri_sans": [],
            "allowed_uri_sans_template": false,
            "allowed_user_ids": [],
            "basic_constraints_valid_for_non_ca": false,
            "client_flag": self.client_flag,
            "server_flag": self.server_flag,
            "code_signing_flag": false,
            "email_protection_flag": false,
            "cn_validations": ["email", "hostname"],
            "country": [],
            "enforce_hostnames": true,
            "ext_key_usage": [],
            "ext_key_usage_oids": [],
            "generate_lease": false,
            "issuer_ref": "default",
            "key_bits": key_bits(&self.key_type, self.key_bits),
            "key_type": self.key_type,
            "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"],
            "locality": [],
            "max_ttl": self.max_ttl,
            "no_store": self.no_store,
            "not_after": "",
            "not_before_duration": 30,
            "organization": self.organization,
            "ou": self.ou,
            "policy_identifiers": [],
            "postal_code": [],
            "province": [],
            "require_cn": true,
            "signature_bits": 256,
            "street_address": [],
            "ttl": self.ttl,
            "use_csr_common_name": true,
            "use_csr_sans": true,
            "use_pss": false,
        })
    }
}

impl PkiStore {
    pub fn exists(&self, rest: &str) -> Option<bool> {
        rest.strip_prefix("roles/").map(|n| self.roles.contains_key(n))
    }
}

fn key_bits(key_type: &str, bits: u64) -> u64 {
    match (key_type, bits) {
        ("rsa", 0) => 2048,
        ("ec", 0) => 256,
        ("ed25519", _) => 0,
        (_, b) => b,
    }
}

fn bad(e: rcgen::Error) -> ApiError {
    ApiError::bad(format!("error generating certificate: {e}"))
}

/// A new key pair of `key_type`/`bits`, and its private key as Vault
/// returns it (PKCS#1 for RSA, SEC1 for EC, PKCS#8 for Ed25519, or PKCS#8
/// for any type when asked).
pub fn generate_key(key_type: &str, bits: u64, pkcs8: bool) -> Result<(KeyPair, String)> {
    let bits = key_bits(key_type, bits);
    let alg: &'static SignatureAlgorithm = match (key_type, bits) {
        ("ec", 256) => &rcgen::PKCS_ECDSA_P256_SHA256,
        ("ec", 384) => &rcgen::PKCS_ECDSA_P384_SHA384,
        ("ec", b) => return Err(ApiError::bad(format!("unsupported bit length for EC key: {b}"))),
        ("ed25519", _) => &rcgen::PKCS_ED25519,
        ("rsa", 2048 | 3072 | 4096) => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePrivateKey;
            let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits as usize)
                .map_err(|e| ApiError::internal(format!("generating an RSA key: {e}")))?;
            let der = k.to_pkcs8_der().map_err(|e| ApiError::internal(format!("encoding an RSA key: {e}")))?;
            let kp =
                KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &rcgen::PKCS_RSA_SHA256).map_err(bad)?;
            let pem = if pkcs8 {
                kp.serialize_pem()
            } else {
                k.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .map_err(|e| ApiError::internal(format!("encoding an RSA key: {e}")))?
                    .to_string()
            };
            return Ok((kp, pem));
        }
        ("rsa", b) => return Err(ApiError::bad(format!("unsupported bit length for RSA key: {b}"))),
        (t, _) => return Err(ApiError::bad(format!("unknown key type {t:?}"))),
    };
    let kp = KeyPair::generate_for(alg).map_err(bad)?;
    let pem = match (pkcs8, key_type) {
        (false, "ec") => sec1_pem(kp.serialized_der()).unwrap_or_else(|| kp.serialize_pem()),
        _ => kp.serialize_pem(),
    };
    Ok((kp, pem))
}

/// Minimal DER: one tag-length-value at the start of `b`, as (tag, value,
/// rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        l0 as usize
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |acc, x| acc << 8 | *x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match value.len() {
        l if l < 0x80 => out.push(l as u8),
        l if l < 0x100 => out.extend([0x81, l as u8]),
        l => out.extend([0x82, (l >> 8) as u8, l as u8]),
    }
    out.extend_from_slice(value);
    out
}

/// An EC key's PKCS#8 document as SEC1 (`EC PRIVATE KEY`) with the curve
/// named, which is what Vault returns.
fn sec1_pem(pkcs8: &[u8]) -> Option<String> {
    let (0x30, body, _) = tlv(pkcs8)? else { return None };
    let (0x02, _, rest) = tlv(body)? else { return None };
    let (0x30, alg, rest) = tlv(rest)? else { return None };
    let (0x06, _, alg_rest) = tlv(alg)? else { return None };
    let (0x06, curve, _) = tlv(alg_rest)? else { return None };
    let (0x04, inner, _) = tlv(rest)? else { return None };
    let (0x30, ec, _) = tlv(inner)? else { return None };
    let (0x02, version, ec_rest) = tlv(ec)? else { return None };
    let (0x04, private, mut ec_rest) = tlv(ec_rest)? else { return None };
    let mut out = der(0x02, version);
    out.extend(der(0x04, private));
    out.extend(der(0xa0, &der(0x06, curve)));
    while let Some((tag, v, r)) = tlv(ec_rest) {
        if tag == 0xa1 {
            out.extend(der(0xa1, v));
        }
        ec_rest = r;
    }
    Some(pem_encode("EC PRIVATE KEY", &der(0x30, &out)))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn serial() -> (SerialNumber, String) {
    let mut b = random::bytes::<20>();
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 1;
    }
    let text = b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
    (SerialNumber::from_slice(&b), text)
}

fn time(secs: u64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| ApiError::bad(format!("invalid time: {e}")))
}

fn dn(cn: &str, org: &[String], ou: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in org {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    for u in ou {
        dn.push(DnType::OrganizationalUnitName, u.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(ca: &Ca) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&ca.common_name, &[], &[]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn issuer(ca: &Ca) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&ca.key).map_err(|e| ApiError::internal(format!("the CA key is unreadable: {e}")))?;
    Ok(Issuer::new(ca_params(ca), key))
}

fn no_ca() -> ApiError {
    ApiError::bad("no default issuer currently configured")
}

pub fn handle(store: &mut PkiStore, cx: &Ctx, req: &Request) -> Result<Reply> {
    let rest = cx.rest.as_str();
    let op = req.op;
    let write = matches!(op, Operation::Create | Operation::Update);
    match rest {
        "root/generate/internal" | "root/generate/exported" if write => generate_root(store, cx, req),
        "root" if op == Operation::Delete => {
            store.ca = None;
            Ok(Reply::Empty)
        }
        "ca/pem" | "cert/ca_chain" | "ca_chain" if op == Operation::Read => {
            let ca = store.ca.as_ref().ok_or_else(no_ca)?;
            if rest == "cert/ca_chain" {
                return Ok(Secret::data(
                    json!({ "certificate": ca.certificate, "ca_chain": ca.certificate, "revocation_time": 0 }),
                ));
            }
            Ok(Reply::Text { content_type: "application/pem-certificate-chain", body: ca.certificate.clone() })
        }
        "cert/ca" if op == Operation::Read => {
            let ca = store.ca.as_ref().ok_or_else(no_ca)?;
            Ok(Secret::data(json!({
                "certificate": ca.certificate,
                "ca_chain": [ca.certificate],
                "issuer_id": ca.issuer_id,
                "revocation_time": 0,
                "revocation_time_rfc3339": "",
            })))
        }
        "issuers/" if op == Operation::List => {
            let ca = store.ca.as_ref().ok_or_else(ApiError::not_found)?;
            Ok(Secret::data(json!({
                "keys": [ca.issuer_id],
                "key_info": { ca.issuer_id.clone(): {
                    "issuer_name": ca.issuer_name,
                    "is_default": true,
                    "key_id": ca.key_id,
                    "serial_number": ca.serial_number,
                }},
            })))
        }
        "certs/" if op == Operation::List => {
            if store.certs.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Secret::keys(store.certs.keys().cloned().collect()))
        }
        "config/urls" if op == Operation::Read => Ok(Secret::data(json!(store.urls))),
        "config/urls" if write => {
            let d = &req.data;
            if let Some(v) = get_list(d, "issuing_certificates")? {
                store.urls.issuing_certificates = v;
            }
            if let Some(v) = get_list(d, "crl_distribution_points")? {
                store.urls.crl_distribution_points = v;
            }
            if let Some(v) = get_list(d, "ocsp_servers")? {
                store.urls.ocsp_servers = v;
            }
            Ok(Reply::Empty)
        }
        "roles/" if op == Operation::List => {
            if store.roles.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Secret::keys(store.roles.keys().cloned().collect()))
        }
        _ => {
            if let Some(name) = rest.strip_prefix("roles/") {
                return role(store, name, req);
            }
            if let Some(name) = rest.strip_prefix("issue/") {
                if !write {
                    return Err(ApiError::unsupported_op());
                }
                return issue(store, cx, name, req);
            }
            if let Some(serial) = rest.strip_prefix("cert/") {
                if op != Operation::Read {
                    return Err(ApiError::unsupported_op());
                }
                let key = serial.replace('-', ":").to_lowercase();
                let pem = store.certs.get(&key).ok_or_else(ApiError::not_found)?;
                return Ok(Secret::data(
                    json!({ "certificate": pem, "revocation_time": 0, "revocation_time_rfc3339": "" }),
                ));
            }
            Err(ApiError::unsupported_path(&req.path))
        }
    }
}

fn generate_root(store: &mut PkiStore, cx: &Ctx, req: &Request) -> Result<Reply> {
    let d = &req.data;
    let exported = cx.rest.ends_with("exported");
    let cn = get_str(d, "common_name")?.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::bad("the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false")
    })?;
    let key_type = get_str(d, "key_type")?.unwrap_or_else(|| "rsa".into());
    let bits = get_u64(d, "key_bits")?.unwrap_or(0);
    let (_, max) = cx.ttls;
    let mut warnings = vec![];
    let mut ttl = get_ttl(d, "ttl")?.unwrap_or(max);
    if ttl > max {
        warnings.push(format!("TTL {ttl}s exceeds the mount's max_lease_ttl {max}s; capped"));
        ttl = max;
    }
    let (key, key_pem) = generate_key(&key_type, bits, get_str(d, "private_key_format")?.as_deref() == Some("pkcs8"))?;
    let now = clock::secs(cx.now);
    let (sn, serial_text) = serial();
    let mut p = CertificateParams::default();
    p.distinguished_name =
        dn(&cn, &get_list(d, "organization")?.unwrap_or_default(), &get_list(d, "ou")?.unwrap_or_default());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = time(now.saturating_sub(30))?;
    p.not_after = time(now + ttl)?;
    p.serial_number = Some(sn);
    p.subject_alt_names =
        sans(&get_list(d, "alt_names")?.unwrap_or_default(), &get_list(d, "ip_sans")?.unwrap_or_default())?;
    let cert = p.self_signed(&key).map_err(bad)?;
    if store.ca.is_some() {
        warnings.push("vault-lite keeps one issuer per mount: the previous root CA was replaced".into());
    }
    let ca = Ca {
        certificate: cert.pem().trim_end().to_string(),
        key: key.serialize_pem(),
        key_type: key_type.clone(),
        common_name: cn,
        serial_number: serial_text,
        not_after: now + ttl,
        issuer_id: random::uuid(),
        issuer_name: get_str(d, "issuer_name")?.unwrap_or_default(),
        key_id: random::uuid(),
    };
    let mut data = json!({
        "certificate": ca.certificate,
        "issuing_ca": ca.certificate,
        "serial_number": ca.serial_number,
        "expiration": ca.not_after,
        "issuer_id": ca.issuer_id,
        "issuer_name": ca.issuer_name,
        "key_id": ca.key_id,
        "key_name": "",
    });
    if exported {
        data["private_key"] = json!(key_pem.trim_end());
        data["private_key_type"] = json!(key_type);
    }
    store.ca = Some(ca);
    Ok(Reply::Secret(Secret { data: Some(data), warnings, ..Default::default() }))
}

fn role(store: &mut PkiStore, name: &str, req: &Request) -> Result<Reply> {
    match req.op {
        Operation::Read => Ok(Secret::data(store.roles.get(name).ok_or_else(ApiError::not_found)?.describe())),
        Operation::Delete => {
            store.roles.remove(name);
            Ok(Reply::Empty)
        }
        Operation::Create | Operation::Update => {
            let d = &req.data;
            let mut r = store.roles.get(name).cloned().unwrap_or_default();
            macro_rules! set {
                ($field:ident, $get:ident) => {
                    if let Some(v) = $get(d, stringify!($field))? {
                        r.$field = v;
                    }
                };
            }
            set!(allowed_domains, get_list);
            set!(allow_subdomains, get_bool);
            set!(allow_bare_domains, get_bool);
            set!(allow_any_name, get_bool);
            set!(allow_localhost, get_bool);
            set!(allow_ip_sans, get_bool);
            set!(allow_glob_domains, get_bool);
            set!(server_flag, get_bool);
            set!(client_flag, get_bool);
            set!(key_type, get_str);
            set!(key_bits, get_u64);
            set!(ttl, get_ttl);
            set!(max_ttl, get_ttl);
            set!(organization, get_list);
            set!(ou, get_list);
            set!(no_store, get_bool);
            // Validate the key shape now, as Vault does, not at issue time.
            match (r.key_type.as_str(), key_bits(&r.key_type, r.key_bits)) {
                ("rsa", 2048 | 3072 | 4096) | ("ec", 256 | 384) | ("ed25519", _) => {}
                (t, b) => return Err(ApiError::bad(format!("unsupported key type/bits: {t}/{b}"))),
            }
            let out = r.describe();
            store.roles.insert(name.to_string(), r);
            Ok(Secret::data(out))
        }
        Operation::List => Err(ApiError::unsupported_op()),
    }
}

fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, post)) => name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post),
    }
}

fn name_allowed(r: &PkiRole, name: &str) -> bool {
    if r.allow_any_name {
        return true;
    }
    if r.allow_localhost && (name == "localhost" || name == "localdomain") {
        return true;
    }
    r.allowed_domains.iter().any(|d| {
        (r.allow_bare_domains && name == d)
            || (r.allow_subdomains
                && name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name[..name.len() - d.len()].ends_with('.'))
            || (r.allow_glob_domains && glob_match(d, name))
    })
}

fn sans(dns: &[String], ips: &[String]) -> Result<Vec<SanType>> {
    let mut out = vec![];
    for n in dns {
        let name = n.clone().try_into().map_err(|_| ApiError::bad(format!("invalid DNS name {n:?}")))?;
        out.push(SanType::DnsName(name));
    }
    for ip in ips {
        let a: IpAddr = ip.parse().map_err(|_| ApiError::bad(format!("the value {ip:?} is not a valid IP address")))?;
        out.push(SanType::IpAddress(a));
    }
    Ok(out)
}

fn issue(store: &mut PkiStore, cx: &Ctx, role_name: &str, req: &Request) -> Result<Reply> {
    let d = &req.data;
    let r = store.roles.get(role_name).cloned().ok_or_else(|| ApiError::bad(format!("unknown role: {role_name}")))?;
    let ca = store.ca.clone().ok_or_else(no_ca)?;
    let cn = get_str(d, "common_name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("the common_name field is required"))?;
    if !name_allowed(&r, &cn) {
        return Err(ApiError::bad(format!("common name {cn} not allowed by this role")));
    }
    let alt = get_list(d, "alt_names")?.unwrap_or_default();
    for a in &alt {
        if !name_allowed(&r, a) {
            return Err(ApiError::bad(format!("subject alternate name {a} not allowed by this role")));
        }
    }
    let ips = get_list(d, "ip_sans")?.unwrap_or_default();
    if !ips.is_empty() && !r.allow_ip_sans {
        return Err(ApiError::bad(format!(
            "IP Subject Alternative Names are not allowed in this role, but was provided {}",
            ips.join(",")
        )));
    }
    let (mount_default, mount_max) = cx.ttls;
    let max = if r.max_ttl > 0 { r.max_ttl } else { mount_max };
    let mut ttl = get_ttl(d, "ttl")?.filter(|t| *t > 0).unwrap_or(if r.ttl > 0 { r.ttl } else { mount_default });
    let mut warnings = vec![];
    if ttl > max {
        warnings.push(format!("TTL \"{ttl}s\" is longer than permitted maxTTL \"{max}s\", so maxTTL is being used"));
        ttl = max;
    }
    let now = clock::secs(cx.now);
    if now + ttl > ca.not_after {
        return Err(ApiError::bad(format!(
            "cannot satisfy request, as TTL would result in notAfter of {} that is beyond the expiration of the CA certificate at {}",
            clock::rfc3339((now + ttl) * clock::NANOS),
            clock::rfc3339(ca.not_after * clock::NANOS)
        )));
    }
    let mut dns = vec![];
    if !get_bool(d, "exclude_cn_from_sans")?.unwrap_or(false) && cn.parse::<IpAddr>().is_err() {
        dns.push(cn.clone());
    }
    for a in alt {
        if !dns.contains(&a) {
            dns.push(a);
        }
    }
    let pkcs8 = get_str(d, "private_key_format")?.as_deref() == Some("pkcs8");
    let (key, key_pem) = generate_key(&r.key_type, r.key_bits, pkcs8)?;
    let (sn, serial_text) = serial();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&cn, &r.organization, &r.ou);
    p.subject_alt_names = sans(&dns, &ips)?;
    p.is_ca = IsCa::NoCa;
    p.key_usages =
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages =
        [(r.server_flag, ExtendedKeyUsagePurpose::ServerAuth), (r.client_flag, ExtendedKeyUsagePurpose::ClientAuth)]
            .into_iter()
            .filter_map(|(on, e)| on.then_some(e))
            .collect();
    p.use_authority_key_identifier_extension = true;
    p.not_before = time(now.saturating_sub(30))?;
    p.not_after = time(now + ttl)?;
    p.serial_number = Some(sn);
    let cert = p.signed_by(&key, &issuer(&ca)?).map_err(bad)?;
    let pem = cert.pem().trim_end().to_string();
    if !r.no_store {
        store.certs.insert(serial_text.clone(), pem.clone());
    }
    Ok(Reply::Secret(Secret {
        data: Some(json!({
            "certificate": pem,
            "issuing_ca": ca.certificate,
            "ca_chain": [ca.certificate],
            "private_key": key_pem.trim_end(),
            "private_key_type": r.key_type,
            "serial_number": serial_text,
            "expiration": now + ttl,
        })),
        warnings,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_vaults_rules() {
        let r = PkiRole {
            allowed_domains: vec!["voyager.internal".into()],
            allow_subdomains: true,
            allow_localhost: false,
            ..Default::default()
        };
        assert!(name_allowed(&r, "api.voyager.internal"));
        assert!(name_allowed(&r, "a.b.voyager.internal"));
        assert!(!name_allowed(&r, "voyager.internal"), "bare domain needs allow_bare_domains");
        assert!(!name_allowed(&r, "evilvoyager.internal"));
        assert!(!name_allowed(&r, "example.com"));
        assert!(!name_allowed(&r, "localhost"));
        let bare = PkiRole { allow_bare_domains: true, ..r.clone() };
        assert!(name_allowed(&bare, "voyager.internal"));
        let glob = PkiRole { allowed_domains: vec!["*.svc".into()], allow_glob_domains: true, ..r };
        assert!(name_allowed(&glob, "db.svc"));
    }

    #[test]
    fn ec_keys_come_out_as_sec1() {
        let (_, pem) = generate_key("ec", 256, false).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{pem}");
        let (_, pem) = generate_key("ec", 256, true).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(generate_key("ec", 521, false).is_err());
    }
}
