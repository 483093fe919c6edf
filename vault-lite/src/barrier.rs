//! The barrier: everything persisted is encrypted with AES-256-GCM under the
//! root key that the unseal keys reconstruct, as Vault's storage is. Sealed,
//! the server holds only ciphertext.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let nonce = crate::random::bytes::<NONCE_LEN>();
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf).expect("seal");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out
}

pub fn open(key: &[u8], blob: &[u8]) -> Result<Vec<u8>, &'static str> {
    if key.len() != 32 || blob.len() < NONCE_LEN {
        return Err("cipher: message authentication failed");
    }
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| "bad key")?);
    let nonce = Nonce::try_assume_unique_for_key(&blob[..NONCE_LEN]).map_err(|_| "bad nonce")?;
    let mut buf = blob[NONCE_LEN..].to_vec();
    let plain = k.open_in_place(nonce, Aad::empty(), &mut buf).map_err(|_| "cipher: message authentication failed")?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_wrong_key() {
        let key = [7u8; 32];
        let blob = super::seal(&key, b"state");
        assert_eq!(super::open(&key, &blob).unwrap(), b"state");
        assert!(super::open(&[8u8; 32], &blob).is_err());
    }
}
