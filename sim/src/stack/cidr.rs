//! IPv4 networks in CIDR form: the only address arithmetic the stack model needs.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network such as `10.0.1.0/24`. Host bits are always zero: parsing
/// `10.0.1.5/24` fails, because a subnet written that way is almost always a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not in CIDR form; write it like `10.0.1.0/24`")]
    Syntax(String),
    #[error("`{input}` has host bits set; the network address is `{suggest}`")]
    HostBits { input: String, suggest: Cidr },
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        let c = Cidr { network: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix };
        (c.network == addr).then_some(c)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The first usable address: Docker and AWS both put the gateway there.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// The address `n` hosts into the network (wrapping is the caller's bug).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(n))
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn contains_net(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// The offset of `addr` from the network address, if it is inside.
    pub fn offset_of(&self, addr: Ipv4Addr) -> Option<u32> {
        self.contains(addr).then(|| u32::from(addr) - u32::from(self.network))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::HostBits {
            input: s.to_string(),
            suggest: Cidr { network: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix },
        })
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_a_subnet() {
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 1, 255));
        assert!(c.contains(Ipv4Addr::new(10, 0, 1, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 2, 1)));
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_address_suggested() {
        let err = "10.0.1.5/24".parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), "`10.0.1.5/24` has host bits set; the network address is `10.0.1.0/24`");
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        for bad in ["10.0.1.0", "10.0.1.0/33", "10.0.1/24", "ten/8", ""] {
            assert!(matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_covers_nesting() {
        let vpc: Cidr = "10.0.0.0/16".parse().unwrap();
        let a: Cidr = "10.0.1.0/24".parse().unwrap();
        let b: Cidr = "10.0.2.0/24".parse().unwrap();
        assert!(vpc.overlaps(&a) && a.overlaps(&vpc));
        assert!(!a.overlaps(&b));
        assert!(vpc.contains_net(&a) && !a.contains_net(&vpc));
    }
}
