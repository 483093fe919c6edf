//! Randomness from the operating system (through `ring`): tokens, accessors,
//! ids, generated passwords.

use ring::rand::{SecureRandom, SystemRandom};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn fill(buf: &mut [u8]) {
    SystemRandom::new().fill(buf).expect("the system's random source failed");
}

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

/// `n` characters from `alphabet`, uniformly (rejection sampling).
pub fn from_alphabet(alphabet: &[u8], n: usize) -> String {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        fill(&mut buf);
        for &b in &buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

pub fn base62(n: usize) -> String {
    from_alphabet(BASE62, n)
}

pub fn hex(n_bytes: usize) -> String {
    let mut b = vec![0u8; n_bytes];
    fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A version 4 UUID.
pub fn uuid() -> String {
    let mut b = bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A password like Vault's default policy makes: 20 characters with at
/// least one lower-case letter, one upper-case letter, one digit and one
/// dash.
pub fn password() -> String {
    loop {
        let p = from_alphabet(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", 20);
        if p.chars().any(|c| c.is_ascii_lowercase())
            && p.chars().any(|c| c.is_ascii_uppercase())
            && p.chars().any(|c| c.is_ascii_digit())
            && p.contains('-')
        {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        assert_eq!(super::base62(24).len(), 24);
        let u = super::uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let p = super::password();
        assert_eq!(p.len(), 20);
        assert!(p.contains('-'));
    }
}
