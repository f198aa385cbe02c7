//! Addresses and CIDR blocks as guard bans and allows them: one type for "an address or a
//! network", normalised (host bits cleared) so that equal networks compare equal.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 network; a single address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not an address or CIDR block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("invalid address {text:?}: expected an IPv4/IPv6 address or CIDR block")]
    Address { text: String },
    #[error("invalid prefix length in {text:?}: at most {max} for this address family")]
    Prefix { text: String, max: u8 },
}

impl Net {
    /// A network from an address and prefix length; host bits are cleared.
    ///
    /// # Panics
    /// Never for a valid prefix; callers pass at most 32 (IPv4) or 128 (IPv6).
    #[must_use]
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => {
                let p = prefix.min(32);
                let mask = if p == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(p))
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let p = prefix.min(128);
                let mask = if p == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(p))
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self {
            addr,
            prefix: prefix.min(Self::max_prefix(addr)),
        }
    }

    /// A single address.
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: Self::max_prefix(addr),
        }
    }

    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The same network with an IPv4-mapped IPv6 address (`::ffff:10.0.0.5`, a prefix of 96 or
    /// more) written as IPv4 (`10.0.0.5`), the form IPv4 traffic is matched against. Other
    /// networks are returned as they are.
    #[must_use]
    pub fn unmapped(self) -> Self {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => a
                .to_ipv4_mapped()
                .map_or(self, |v4| Self::new(IpAddr::V4(v4), self.prefix - 96)),
            _ => self,
        }
    }

    /// The network address (host bits cleared).
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True for a single address (/32 or /128).
    #[must_use]
    pub fn is_host(&self) -> bool {
        self.prefix == Self::max_prefix(self.addr)
    }

    /// True if `ip` lies inside this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// as a dual-stack socket reports an IPv4 peer) is the IPv4 address it carries.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            other => other,
        };
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Self::new(ip, self.prefix).addr == self.addr
            }
            _ => false,
        }
    }

    /// True if the two networks share at least one address.
    #[must_use]
    pub fn overlaps(&self, other: &Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Net {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::Address {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| bad())?;
        let max = Self::max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| bad())?;
                if p > max {
                    return Err(NetError::Prefix {
                        text: text.to_owned(),
                        max,
                    });
                }
                p
            }
        };
        Ok(Self::new(addr, prefix))
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_mapped_networks_are_written_as_ipv4() {
        let n = |t: &str| t.parse::<Net>().unwrap();
        assert_eq!(n("::ffff:10.88.0.5").unmapped(), n("10.88.0.5"));
        assert_eq!(n("::ffff:10.88.0.0/120").unmapped(), n("10.88.0.0/24"));
        // Not mapped, or wider than the mapped space: as they are.
        assert_eq!(n("2001:db8::1").unmapped(), n("2001:db8::1"));
        assert_eq!(n("::/64").unmapped(), n("::/64"));
        assert_eq!(n("10.0.0.1").unmapped(), n("10.0.0.1"));
    }

    use super::*;

    #[test]
    fn parses_and_normalises() {
        let n: Net = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert!(n.contains("::ffff:10.9.0.1".parse().unwrap()));
        let v6: Net = "::/0".parse().unwrap();
        assert!(!v6.contains("10.9.0.1".parse().unwrap()));
        let h: Net = "192.0.2.7".parse().unwrap();
        assert!(h.is_host());
        assert_eq!(h.to_string(), "192.0.2.7");
        let h: Net = "192.0.2.7/32".parse().unwrap();
        assert_eq!(h.to_string(), "192.0.2.7");
        let v6: Net = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::2".parse().unwrap()));
        let b: Net = "[2001:db8::5]".parse().unwrap();
        assert!(b.is_host());
        assert!(
            "0.0.0.0/0"
                .parse::<Net>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::1/129",
            "hello",
            "1.2.3.4/x",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Net>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn overlap() {
        let a: Net = "10.0.0.0/8".parse().unwrap();
        let b: Net = "10.5.0.1".parse().unwrap();
        let c: Net = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
