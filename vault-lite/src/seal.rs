//! The seal: whether the server is initialised, the unseal keys' shape and
//! progress, and the state's ciphertext while sealed. `sys/init` splits a new
//! root key with Shamir's scheme and returns the shares; `sys/unseal`
//! gathers shares until the threshold, recombines the key and decrypts the
//! state; `sys/seal` drops the key and the plaintext. Also the state file's
//! format.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{barrier, random, shamir};

pub const FORMAT: &str = "vault-lite/1";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct SealConfig {
    pub secret_shares: u8,
    pub secret_threshold: u8,
}

/// The state file: the seal's shape and the barrier-encrypted state.
#[derive(Serialize, Deserialize)]
pub struct SealedFile {
    pub format: String,
    pub secret_shares: u8,
    pub secret_threshold: u8,
    /// base64 of nonce, AES-256-GCM ciphertext and tag.
    pub barrier: String,
}

#[derive(Default)]
pub struct Seal {
    /// `None` until `sys/init`.
    pub config: Option<SealConfig>,
    /// The root key; `Some` exactly while unsealed.
    pub key: Option<[u8; 32]>,
    /// Unseal shares given so far.
    pub progress: Vec<Vec<u8>>,
    pub nonce: String,
    /// The encrypted state (kept current while unsealed, too).
    pub blob: Vec<u8>,
}

/// What `sys/init` returns once: the shares and the root token.
pub struct InitOutput {
    pub keys: Vec<Vec<u8>>,
}

impl Seal {
    pub fn from_file(f: &SealedFile) -> Result<Seal, String> {
        if f.format != FORMAT {
            return Err(format!("unknown state file format {:?} (expected {FORMAT:?})", f.format));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&f.barrier)
            .map_err(|e| format!("the state file's barrier is not base64: {e}"))?;
        Ok(Seal {
            config: Some(SealConfig { secret_shares: f.secret_shares, secret_threshold: f.secret_threshold }),
            blob,
            ..Default::default()
        })
    }

    pub fn to_file(&self) -> Option<SealedFile> {
        let c = self.config?;
        Some(SealedFile {
            format: FORMAT.into(),
            secret_shares: c.secret_shares,
            secret_threshold: c.secret_threshold,
            barrier: base64::engine::general_purpose::STANDARD.encode(&self.blob),
        })
    }

    pub fn initialized(&self) -> bool {
        self.config.is_some()
    }

    pub fn sealed(&self) -> bool {
        self.key.is_none()
    }

    /// Validate the shape like Vault and make a new root key and its shares.
    pub fn init(&mut self, shares: u64, threshold: u64) -> Result<InitOutput, String> {
        if shares < 1 {
            return Err("shares must be at least one".into());
        }
        if threshold < 1 {
            return Err("threshold must be at least one".into());
        }
        if shares > 1 && threshold == 1 {
            return Err("threshold must be greater than one for multiple shares".into());
        }
        if shares > 255 {
            return Err("shares must be less than 256".into());
        }
        if threshold > shares {
            return Err("threshold cannot be larger than shares".into());
        }
        let key = random::bytes::<32>();
        let keys = shamir::split(&key, shares as u8, threshold as u8);
        self.config = Some(SealConfig { secret_shares: shares as u8, secret_threshold: threshold as u8 });
        self.key = Some(key);
        Ok(InitOutput { keys })
    }

    /// Add one share; once there are enough, return the recombined key.
    pub fn add_share(&mut self, share: Vec<u8>) -> Result<Option<[u8; 32]>, String> {
        let c = self.config.ok_or("Vault is not initialized")?;
        if self.progress.is_empty() {
            self.nonce = random::uuid();
        }
        if !self.progress.contains(&share) {
            self.progress.push(share);
        }
        if self.progress.len() < c.secret_threshold as usize {
            return Ok(None);
        }
        let shares = std::mem::take(&mut self.progress);
        self.nonce.clear();
        let key = shamir::combine(&shares).map_err(|e| format!("failed to unseal: {e}"))?;
        let key: [u8; 32] = key.try_into().map_err(|_| "failed to unseal: invalid key length".to_string())?;
        barrier::open(&key, &self.blob).map_err(|e| format!("Error unsealing: {e}"))?;
        Ok(Some(key))
    }
}

/// An unseal key as given: hex or base64.
pub fn decode_key(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    }
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}
