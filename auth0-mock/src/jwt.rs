//! JWTs: `encode` signs claims with RS256, and `validate` makes the checks a
//! resource server must make of an Auth0 access token, against the keys of a
//! JWKS (`PublicKeys`). **No I/O, and time is passed in.**
//!
//! `validate` trusts nothing in a token before its signature is checked with
//! a key the caller supplied: the algorithm must be exactly RS256 (so `none`
//! and HMAC tokens, including ones "signed" with the public key, are
//! refused before any key is used), the key is chosen by `kid` from the JWKS
//! only (never from `jku`, `x5u` or an embedded `jwk`), and only then are the
//! claims read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15;
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::keys::SigningKey;

/// Tokens larger than this are refused unread (Auth0's are ~1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Sign `claims` as a compact JWS with the header Auth0 uses.
pub fn encode(claims: &Map<String, Value>, key: &SigningKey) -> String {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": key.kid() });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// RSA verification keys by `kid`, as a resource server builds them from a
/// JWKS document.
#[derive(Clone, Default)]
pub struct PublicKeys {
    keys: Vec<(String, pkcs1v15::VerifyingKey<Sha256>)>,
}

impl PublicKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, RsaPublicKey)>) -> PublicKeys {
        PublicKeys { keys: keys.into_iter().map(|(kid, k)| (kid, pkcs1v15::VerifyingKey::new(k))).collect() }
    }

    /// The usable keys of a JWKS document: RSA signing keys for RS256 of at
    /// least 2048 bits, each with a `kid`. Others are skipped, as JWKS
    /// clients do; an unusable document is an error.
    pub fn from_jwks(jwks: &Value) -> Result<PublicKeys, String> {
        let list = jwks.get("keys").and_then(Value::as_array).ok_or("a JWKS is an object with a `keys` array")?;
        let mut keys = vec![];
        for k in list {
            let field = |name: &str| k.get(name).and_then(Value::as_str);
            if field("kty") != Some("RSA")
                || field("use").is_some_and(|u| u != "sig")
                || field("alg").is_some_and(|a| a != "RS256")
            {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) = (field("kid"), field("n"), field("e")) else { continue };
            let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else { continue };
            let Ok(public) = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)) else {
                continue;
            };
            if rsa::traits::PublicKeyParts::size(&public) * 8 < 2048 {
                continue;
            }
            if !keys.iter().any(|(k, _): &(String, RsaPublicKey)| k == kid) {
                keys.push((kid.to_string(), public));
            }
        }
        Ok(PublicKeys::new(keys))
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    fn get(&self, kid: &str) -> Option<&pkcs1v15::VerifyingKey<Sha256>> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }
}

/// What a valid token must say, and how much clock skew to forgive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// Exactly the `iss` claim, e.g. `https://voyager.auth0.com/`.
    pub issuer: String,
    /// Must be `aud`, or one of its entries.
    pub audience: String,
    /// Seconds of leeway on `exp`, `nbf` and `iat`.
    pub leeway: u64,
}

/// Why a token was refused. The text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("the token is not a signed JWT (three base64url parts)")]
    Malformed,
    #[error("the token header is not a JSON object")]
    Header,
    #[error("alg {0} is not accepted: tokens must be signed with RS256")]
    Algorithm(String),
    #[error("the token header marks extensions critical that are not understood")]
    Critical,
    #[error("the token header has no kid")]
    NoKid,
    #[error("no signing key with kid {0}")]
    UnknownKid(String),
    #[error("invalid signature")]
    Signature,
    #[error("the token payload is not a JSON object")]
    Payload,
    #[error("claim {0} is missing or of the wrong type")]
    Claim(&'static str),
    #[error("issuer {found} is not the expected {expected}")]
    Issuer { found: String, expected: String },
    #[error("audience does not include {expected}")]
    Audience { expected: String },
    #[error("the token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired { exp: i64, now: u64, leeway: u64 },
    #[error("the token is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid { nbf: i64, now: u64, leeway: u64 },
    #[error("the token was issued in the future, at {iat} (now {now}, leeway {leeway} s)")]
    IssuedInFuture { iat: i64, now: u64, leeway: u64 },
}

/// Validate an access token as a resource server must, returning its claims.
pub fn validate(
    token: &str,
    keys: &PublicKeys,
    expect: &Expectations,
    now: u64,
) -> Result<Map<String, Value>, InvalidToken> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(InvalidToken::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(InvalidToken::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| InvalidToken::Malformed);
    let header: Map<String, Value> = serde_json::from_slice(&decode(h)?).map_err(|_| InvalidToken::Header)?;

    match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" => {}
        Some(Value::String(alg)) => return Err(InvalidToken::Algorithm(alg.clone())),
        _ => return Err(InvalidToken::Header),
    }
    if header.contains_key("crit") {
        return Err(InvalidToken::Critical);
    }
    let kid = header.get("kid").and_then(Value::as_str).ok_or(InvalidToken::NoKid)?;
    let key = keys.get(kid).ok_or_else(|| InvalidToken::UnknownKid(kid.to_string()))?;
    let signature = pkcs1v15::Signature::try_from(decode(s)?.as_slice()).map_err(|_| InvalidToken::Signature)?;
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify(signed.as_bytes(), &signature).map_err(|_| InvalidToken::Signature)?;

    let claims: Map<String, Value> = serde_json::from_slice(&decode(p)?).map_err(|_| InvalidToken::Payload)?;
    check_claims(&claims, expect, now)?;
    Ok(claims)
}

fn check_claims(claims: &Map<String, Value>, expect: &Expectations, now: u64) -> Result<(), InvalidToken> {
    let iss = claims.get("iss").and_then(Value::as_str).ok_or(InvalidToken::Claim("iss"))?;
    if iss != expect.issuer {
        return Err(InvalidToken::Issuer { found: iss.to_string(), expected: expect.issuer.clone() });
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == expect.audience,
        Some(Value::Array(list)) => {
            if !list.iter().all(Value::is_string) {
                return Err(InvalidToken::Claim("aud"));
            }
            list.iter().any(|a| a.as_str() == Some(expect.audience.as_str()))
        }
        _ => return Err(InvalidToken::Claim("aud")),
    };
    if !audience_ok {
        return Err(InvalidToken::Audience { expected: expect.audience.clone() });
    }
    if claims.get("sub").is_some_and(|s| !s.is_string()) {
        return Err(InvalidToken::Claim("sub"));
    }

    let leeway = expect.leeway;
    let (now_i, leeway_i) = (now as i128, leeway as i128);
    let exp = time(claims, "exp")?.ok_or(InvalidToken::Claim("exp"))?;
    if now_i >= exp as i128 + leeway_i {
        return Err(InvalidToken::Expired { exp, now, leeway });
    }
    if let Some(nbf) = time(claims, "nbf")? {
        if nbf as i128 > now_i + leeway_i {
            return Err(InvalidToken::NotYetValid { nbf, now, leeway });
        }
    }
    if let Some(iat) = time(claims, "iat")? {
        if iat as i128 > now_i + leeway_i {
            return Err(InvalidToken::IssuedInFuture { iat, now, leeway });
        }
    }
    Ok(())
}

/// A NumericDate claim in whole seconds. Fractions are truncated: for `exp`
/// that errs on the strict side; for `nbf` and `iat` it forgives under a
/// second, far inside the leeway.
fn time(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, InvalidToken> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(InvalidToken::Claim(name)),
        Some(_) => Err(InvalidToken::Claim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::rand_core::OsRng;
    use rsa::RsaPrivateKey;

    const NOW: u64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_private(RsaPrivateKey::new(&mut OsRng, 1024).unwrap())
    }

    fn expect() -> Expectations {
        Expectations { issuer: "https://voyager.auth0.com/".into(), audience: "voyager-api".into(), leeway: 300 }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut c = json!({
            "iss": "https://voyager.auth0.com/",
            "sub": "auth0|1",
            "aud": ["voyager-api", "https://voyager.auth0.com/userinfo"],
            "iat": NOW,
            "exp": NOW + 3600,
        });
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c.as_object().unwrap().clone()
    }

    fn check(key: &SigningKey, extra: Value) -> Result<Map<String, Value>, InvalidToken> {
        let keys = PublicKeys::new([(key.kid().to_string(), key.public_key().clone())]);
        validate(&encode(&claims(extra), key), &keys, &expect(), NOW)
    }

    #[test]
    fn a_good_token_validates_and_yields_its_claims() {
        let c = check(&key(), json!({})).unwrap();
        assert_eq!(c["sub"], "auth0|1");
    }

    #[test]
    fn the_boundaries_of_the_leeway_are_exact() {
        let k = key();
        assert!(check(&k, json!({ "exp": NOW - 299 })).is_ok());
        assert!(matches!(check(&k, json!({ "exp": NOW - 300 })), Err(InvalidToken::Expired { .. })));
        assert!(check(&k, json!({ "nbf": NOW + 300 })).is_ok());
        assert!(matches!(check(&k, json!({ "nbf": NOW + 301 })), Err(InvalidToken::NotYetValid { .. })));
        assert!(check(&k, json!({ "iat": NOW + 300 })).is_ok());
        assert!(matches!(check(&k, json!({ "iat": NOW + 301 })), Err(InvalidToken::IssuedInFuture { .. })));
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused() {
        let k = key();
        assert_eq!(check(&k, json!({ "exp": "never" })), Err(InvalidToken::Claim("exp")));
        assert_eq!(check(&k, json!({ "aud": ["voyager-api", 7] })), Err(InvalidToken::Claim("aud")));
        assert_eq!(check(&k, json!({ "iss": null })), Err(InvalidToken::Claim("iss")));
        let mut c = claims(json!({}));
        c.remove("exp");
        let keys = PublicKeys::new([(k.kid().to_string(), k.public_key().clone())]);
        assert_eq!(validate(&encode(&c, &k), &keys, &expect(), NOW), Err(InvalidToken::Claim("exp")));
    }

    #[test]
    fn a_token_with_a_fourth_part_or_padding_is_malformed() {
        let k = key();
        let keys = PublicKeys::new([(k.kid().to_string(), k.public_key().clone())]);
        let t = encode(&claims(json!({})), &k);
        assert_eq!(validate(&format!("{t}.x"), &keys, &expect(), NOW), Err(InvalidToken::Malformed));
        assert_eq!(validate(&format!("{t}="), &keys, &expect(), NOW), Err(InvalidToken::Malformed));
    }

    #[test]
    fn a_key_from_another_ring_with_the_same_kid_fails_the_signature() {
        let (a, b) = (key(), key());
        let keys = PublicKeys::new([(a.kid().to_string(), b.public_key().clone())]);
        let t = encode(&claims(json!({})), &a);
        assert_eq!(validate(&t, &keys, &expect(), NOW), Err(InvalidToken::Signature));
    }

    #[test]
    fn crit_headers_are_refused() {
        let k = key();
        let keys = PublicKeys::new([(k.kid().to_string(), k.public_key().clone())]);
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": k.kid(), "crit": ["exp"]}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims(json!({}))).to_string());
        let input = format!("{header}.{payload}");
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(k.sign(input.as_bytes())));
        assert_eq!(validate(&token, &keys, &expect(), NOW), Err(InvalidToken::Critical));
    }
}
