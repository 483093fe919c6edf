//! Signing keys: `SigningKey` (a 2048-bit RSA key named by its RFC 7638
//! thumbprint) and `KeyRing`, the tenant's keys over time. The newest key
//! signs; a rotated-out key stays published and accepted for an overlap, so
//! tokens already handed out keep validating while resource servers refresh
//! their JWKS cache. **Time is passed in**, never read here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::jwt::PublicKeys;

/// Auth0 signs with 2048-bit RSA keys.
pub const KEY_BITS: usize = 2048;

pub struct SigningKey {
    kid: String,
    signer: pkcs1v15::SigningKey<Sha256>,
    public: RsaPublicKey,
    /// When this key stopped signing; `None` while it is the current key.
    retired_at: Option<u64>,
}

impl SigningKey {
    /// A fresh key from the OS's randomness. Slow (a large prime search):
    /// call it off the async runtime's worker threads.
    pub fn generate() -> Result<SigningKey, Error> {
        let private = RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(|e| Error::KeyGeneration(e.to_string()))?;
        Ok(SigningKey::from_private(private))
    }

    pub fn from_private(private: RsaPrivateKey) -> SigningKey {
        let public = private.to_public_key();
        SigningKey { kid: thumbprint(&public), signer: pkcs1v15::SigningKey::new(private), public, retired_at: None }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`), blinded against timing.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signer.sign_with_rng(&mut OsRng, message).to_vec()
    }

    /// This key as a JWK, as Auth0 publishes it (without the certificate
    /// chain, which no validator needs when `n` and `e` are given).
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
        })
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in
/// lexicographic order, base64url. Stable for a key, unique across keys.
pub fn thumbprint(public: &RsaPublicKey) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        URL_SAFE_NO_PAD.encode(public.n().to_bytes_be())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new signing key.
    pub current: String,
    /// The key that stopped signing and is now in its overlap.
    pub retired: String,
    /// Keys no longer published or accepted at all.
    pub dropped: Vec<String>,
}

pub struct KeyRing {
    /// Oldest first; the last key is the current one.
    keys: Vec<SigningKey>,
    /// Seconds a retired key stays published; `None`: until the next rotation.
    overlap: Option<u64>,
}

impl KeyRing {
    pub fn new(first: SigningKey, overlap: Option<u64>) -> KeyRing {
        KeyRing { keys: vec![first], overlap }
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKey {
        self.keys.last().expect("a key ring always holds its current key")
    }

    /// Make `next` the signing key. The previous one is retired into its
    /// overlap; keys retired by earlier rotations are dropped, so at most one
    /// old key is ever published beside the current one.
    pub fn rotate(&mut self, next: SigningKey, now: u64) -> Rotation {
        let dropped: Vec<String> = self.keys.iter().filter(|k| k.retired_at.is_some()).map(|k| k.kid.clone()).collect();
        self.keys.retain(|k| k.retired_at.is_none());
        let previous = self.keys.last_mut().expect("a key ring always holds its current key");
        previous.retired_at = Some(now);
        let retired = previous.kid.clone();
        let current = next.kid.clone();
        self.keys.push(next);
        Rotation { current, retired, dropped }
    }

    /// Keys that validate tokens at `now`, current first.
    pub fn published(&self, now: u64) -> impl Iterator<Item = &SigningKey> {
        let overlap = self.overlap;
        self.keys.iter().rev().filter(move |k| match (k.retired_at, overlap) {
            (None, _) | (Some(_), None) => true,
            (Some(at), Some(o)) => now < at.saturating_add(o),
        })
    }

    /// The JWKS document (`/.well-known/jwks.json`) at `now`.
    pub fn jwks(&self, now: u64) -> Value {
        json!({ "keys": self.published(now).map(SigningKey::jwk).collect::<Vec<_>>() })
    }

    /// The published keys as a validator holds them.
    pub fn public_keys(&self, now: u64) -> PublicKeys {
        PublicKeys::new(self.published(now).map(|k| (k.kid.clone(), k.public.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A small key keeps these unit tests fast; the ring's logic does not
    // depend on the size.
    fn key() -> SigningKey {
        SigningKey::from_private(RsaPrivateKey::new(&mut OsRng, 512).unwrap())
    }

    fn kids(ring: &KeyRing, now: u64) -> Vec<String> {
        ring.published(now).map(|k| k.kid().to_string()).collect()
    }

    #[test]
    fn a_rotated_out_key_stays_until_the_next_rotation_without_an_overlap() {
        let (a, b, c) = (key(), key(), key());
        let (ka, kb, kc) = (a.kid().to_string(), b.kid().to_string(), c.kid().to_string());
        let mut ring = KeyRing::new(a, None);
        let r = ring.rotate(b, 100);
        assert_eq!((r.current.as_str(), r.retired.as_str()), (kb.as_str(), ka.as_str()));
        assert_eq!(kids(&ring, 1_000_000), [kb.clone(), ka.clone()]);
        assert_eq!(ring.current().kid(), kb);
        let r = ring.rotate(c, 200);
        assert_eq!(r.dropped, [ka]);
        assert_eq!(kids(&ring, 200), [kc, kb]);
    }

    #[test]
    fn with_an_overlap_a_retired_key_leaves_when_it_ends() {
        let (a, b) = (key(), key());
        let (ka, kb) = (a.kid().to_string(), b.kid().to_string());
        let mut ring = KeyRing::new(a, Some(60));
        ring.rotate(b, 1000);
        assert_eq!(kids(&ring, 1059), [kb.clone(), ka]);
        assert_eq!(kids(&ring, 1060), [kb]);
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        let k = key();
        let jwk = k.jwk();
        let canonical =
            format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, jwk["e"].as_str().unwrap(), jwk["n"].as_str().unwrap());
        assert_eq!(k.kid(), URL_SAFE_NO_PAD.encode(Sha256::digest(canonical)));
        assert_eq!(jwk["e"], "AQAB");
    }
}
