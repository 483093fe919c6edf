//! Shamir's secret sharing over GF(2^8), as Vault splits its root key into
//! unseal keys: each share is the polynomial values for every byte of the
//! secret followed by the share's x coordinate.

fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

fn inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8).
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Split `secret` into `n` shares, any `t` of which recover it.
pub fn split(secret: &[u8], n: u8, t: u8) -> Vec<Vec<u8>> {
    assert!(t >= 1 && t <= n);
    let mut shares: Vec<Vec<u8>> = (1..=n).map(|_| Vec::with_capacity(secret.len() + 1)).collect();
    let mut coeffs = vec![0u8; t as usize];
    for &byte in secret {
        crate::random::fill(&mut coeffs);
        coeffs[0] = byte;
        for (i, share) in shares.iter_mut().enumerate() {
            let x = (i + 1) as u8;
            // Horner's rule.
            let y = coeffs.iter().rev().fold(0u8, |acc, &c| mul(acc, x) ^ c);
            share.push(y);
        }
    }
    for (i, share) in shares.iter_mut().enumerate() {
        share.push((i + 1) as u8);
    }
    shares
}

/// Recover the secret from shares (Lagrange interpolation at x = 0).
pub fn combine(shares: &[Vec<u8>]) -> Result<Vec<u8>, &'static str> {
    let len = shares.first().map(Vec::len).ok_or("no shares")?;
    if len < 2 || shares.iter().any(|s| s.len() != len) {
        return Err("shares have different lengths");
    }
    let xs: Vec<u8> = shares.iter().map(|s| s[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if *x == 0 || xs[..i].contains(x) {
            return Err("duplicate or invalid share");
        }
    }
    let mut out = vec![0u8; len - 1];
    for (j, share) in shares.iter().enumerate() {
        // basis_j(0) = prod_{m != j} x_m / (x_m - x_j); subtraction is xor.
        let mut basis = 1u8;
        for (m, &xm) in xs.iter().enumerate() {
            if m != j {
                basis = mul(basis, mul(xm, inv(xm ^ xs[j])));
            }
        }
        for (o, &y) in out.iter_mut().zip(share) {
            *o ^= mul(y, basis);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers_the_secret() {
        let secret: Vec<u8> = (0..32).collect();
        let shares = split(&secret, 5, 3);
        assert_eq!(combine(&shares[..3]).unwrap(), secret);
        assert_eq!(combine(&[shares[4].clone(), shares[1].clone(), shares[3].clone()]).unwrap(), secret);
        assert_ne!(combine(&shares[..2]).unwrap(), secret);
        let one = split(&secret, 1, 1);
        assert_eq!(combine(&one).unwrap(), secret);
    }
}
