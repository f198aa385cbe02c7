//! Lock-out safety: the addresses guard never bans, whatever the engine, a rate event or the
//! CLI asks. They are the host's own addresses (every interface), its default gateways, its
//! resolvers, the trusted proxies, the AI endpoint and the configured `bans.protect` list.
//! The host's facts are read at start ([`HostFacts::read`]) and again every
//! `bans.protect_refresh` ([`HostFacts::refreshed`]); everything else here is pure
//! (parsers of `/proc/net/route`, `/proc/net/ipv6_route` and `resolv.conf`, the list, the check)
//! so it is tested with the facts passed in.
//!
//! The rule ([`ProtectList::check`]): a ban whose target is a protected address, or lies inside a
//! protected network, is always refused. A ban whose target strictly *contains* a protected
//! address (banning `10.0.0.0/8` while the gateway is `10.0.0.1`) is refused unless the
//! operator forces it from the CLI; the protected addresses are then still let through, because
//! the ban service puts every protected network in the XDP allowlist. Only the CLI can force;
//! the engine and the rate limiter never do.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::net::Net;

/// Why an address is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// An address of one of the host's interfaces.
    OwnAddress,
    /// A default gateway (`/proc/net/route`, `/proc/net/ipv6_route`).
    Gateway,
    /// A nameserver of `/etc/resolv.conf`.
    Resolver,
    /// `tap.trusted_proxies`.
    TrustedProxy,
    /// The `[ai]` endpoint's address.
    AiEndpoint,
    /// `bans.protect`.
    Configured,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::OwnAddress => "an address of this host",
            Why::Gateway => "a default gateway",
            Why::Resolver => "a resolver",
            Why::TrustedProxy => "a trusted proxy",
            Why::AiEndpoint => "the AI endpoint",
            Why::Configured => "in bans.protect",
        })
    }
}

/// One protected network and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protected {
    pub net: Net,
    pub why: Why,
    /// Where it was found: the interface, the file, the config key.
    pub found_in: String,
}

/// A ban the protected list refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The target is protected, or inside a protected network: nothing overrides this.
    #[error(
        "refusing to ban {target}: {net} is protected ({why}, from {found_in}); no flag overrides this"
    )]
    Protected {
        target: Net,
        net: Net,
        why: Why,
        found_in: String,
    },
    /// The target contains a protected network.
    #[error(
        "refusing to ban {target}: it contains {net}, which is protected ({why}, from {found_in}); use --force to ban the rest of the range ({net} stays reachable)"
    )]
    Contains {
        target: Net,
        net: Net,
        why: Why,
        found_in: String,
    },
}

/// The protected networks, in the order they were found, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectList {
    entries: Vec<Protected>,
}

impl ProtectList {
    /// The list from the host's facts, the trusted proxies and `bans.protect`.
    #[must_use]
    pub fn compute(facts: &HostFacts, trusted_proxies: &[Net], configured: &[Net]) -> Self {
        let mut list = Self::default();
        for (iface, ip) in &facts.addresses {
            list.push(Net::host(*ip), Why::OwnAddress, iface);
        }
        for ip in &facts.gateways {
            list.push(Net::host(*ip), Why::Gateway, "the routing table");
        }
        for ip in &facts.resolvers {
            list.push(Net::host(*ip), Why::Resolver, "/etc/resolv.conf");
        }
        for net in trusted_proxies {
            list.push(*net, Why::TrustedProxy, "tap.trusted_proxies");
        }
        for ip in &facts.ai_endpoint {
            list.push(Net::host(*ip), Why::AiEndpoint, "ai.base_url");
        }
        for net in configured {
            list.push(*net, Why::Configured, "bans.protect");
        }
        list
    }

    fn push(&mut self, net: Net, why: Why, source: &str) {
        // The unspecified address is nobody's: `0.0.0.0` in a file must not protect it.
        if net.is_host() && net.addr().is_unspecified() {
            return;
        }
        if self.entries.iter().any(|e| e.net == net) {
            return;
        }
        self.entries.push(Protected {
            net,
            why,
            found_in: source.to_owned(),
        });
    }

    /// Every protected network.
    #[must_use]
    pub fn entries(&self) -> &[Protected] {
        &self.entries
    }

    /// The networks alone (for the XDP allowlist and the engine).
    #[must_use]
    pub fn nets(&self) -> Vec<Net> {
        self.entries.iter().map(|e| e.net).collect()
    }

    /// Whether banning `target` is allowed. `force` (the CLI's `--force`) only lets through a
    /// target that strictly contains protected networks, never one that is or lies inside one.
    ///
    /// # Errors
    /// The first [`Refusal`] found, naming the protected network and why.
    pub fn check(&self, target: &Net, force: bool) -> Result<(), Refusal> {
        let mut contains = None;
        for e in &self.entries {
            if !target.overlaps(&e.net) {
                continue;
            }
            if target.prefix() >= e.net.prefix() {
                return Err(Refusal::Protected {
                    target: *target,
                    net: e.net,
                    why: e.why,
                    found_in: e.found_in.clone(),
                });
            }
            if !force && contains.is_none() {
                contains = Some(Refusal::Contains {
                    target: *target,
                    net: e.net,
                    why: e.why,
                    found_in: e.found_in.clone(),
                });
            }
        }
        contains.map_or(Ok(()), Err)
    }
}

/// What the host says about itself: read at start, and again every `bans.protect_refresh`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// (interface, address) of every interface.
    pub addresses: Vec<(String, IpAddr)>,
    pub gateways: Vec<IpAddr>,
    pub resolvers: Vec<IpAddr>,
    /// The AI endpoint's addresses (a literal, or what its name resolved to at start).
    pub ai_endpoint: Vec<IpAddr>,
}

impl HostFacts {
    /// Reads the interfaces (`getifaddrs`), `/proc/net/route`, `/proc/net/ipv6_route`,
    /// `/etc/resolv.conf` and resolves `ai_base_url`'s host. What cannot be read is logged and
    /// left out: guard still starts.
    #[must_use]
    pub fn read(ai_base_url: Option<&str>) -> Self {
        let mut facts = Self::read_local(true);
        if let Some(url) = ai_base_url
            && let Some((host, port)) = url_host(url)
        {
            match host.parse::<IpAddr>() {
                Ok(ip) => facts.ai_endpoint.push(ip),
                Err(_) => match (host.as_str(), port).to_socket_addrs() {
                    Ok(addrs) => facts.ai_endpoint.extend(addrs.map(|a| a.ip())),
                    Err(e) => {
                        warn!(%host, "the AI endpoint did not resolve, so it is not protected: {e}");
                    }
                },
            }
        }
        facts
    }

    /// The host's facts read again (the AI endpoint as resolved at start), for the periodic
    /// refresh: quiet about what cannot be read, which was said at start.
    #[must_use]
    pub fn refreshed(&self) -> Self {
        Self {
            ai_endpoint: self.ai_endpoint.clone(),
            ..Self::read_local(false)
        }
    }

    /// The interfaces' addresses, the default gateways and the resolvers; what cannot be read
    /// is left out (and said, if `loud`).
    fn read_local(loud: bool) -> Self {
        let mut facts = Self::default();
        match nix::ifaddrs::getifaddrs() {
            Ok(list) => {
                for ifa in list {
                    let Some(addr) = ifa.address else { continue };
                    let ip = if let Some(a) = addr.as_sockaddr_in() {
                        IpAddr::V4(a.ip())
                    } else if let Some(a) = addr.as_sockaddr_in6() {
                        IpAddr::V6(a.ip())
                    } else {
                        continue;
                    };
                    facts.addresses.push((ifa.interface_name, ip));
                }
            }
            Err(e) if loud => warn!("cannot list the interfaces' addresses to protect them: {e}"),
            Err(e) => debug!("cannot list the interfaces' addresses to protect them: {e}"),
        }
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if loud => {
                info!("{path} not read ({e}): nothing from it is protected");
                String::new()
            }
            Err(e) => {
                debug!("{path} not read ({e})");
                String::new()
            }
        };
        facts.gateways = default_gateways_v4(&read("/proc/net/route"));
        facts
            .gateways
            .extend(default_gateways_v6(&read("/proc/net/ipv6_route")));
        facts.resolvers = nameservers(&read("/etc/resolv.conf"));
        facts
    }
}

/// The gateways of the IPv4 default routes in `/proc/net/route` (destination and mask 0;
/// addresses are hex in host byte order, little-endian on the machines guard runs on).
#[must_use]
pub fn default_gateways_v4(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(gw), Some(mask)) = (f.get(1), f.get(2), f.get(7)) else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        if let (Some(0), Some(g), Some(0)) = (hex(dest), hex(gw), hex(mask))
            && g != 0
        {
            let ip = IpAddr::V4(Ipv4Addr::from(g.to_le_bytes()));
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The next hops of the IPv6 default routes in `/proc/net/ipv6_route` (destination `::/0`).
#[must_use]
pub fn default_gateways_v6(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(plen), Some(hop)) = (f.first(), f.get(1), f.get(4)) else {
            continue;
        };
        let hex = |s: &str| u128::from_str_radix(s, 16).ok().filter(|_| s.len() == 32);
        if let (Some(0), Ok(0), Some(h)) = (hex(dest), u8::from_str_radix(plen, 16), hex(hop))
            && h != 0
        {
            let ip = IpAddr::V6(Ipv6Addr::from(h));
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The `nameserver` addresses of a `resolv.conf` (a zone index such as `%eth0` is dropped).
#[must_use]
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// The host and port of an `http://` or `https://` URL (`[v6]` literals unbracketed, the
/// scheme's port when none is given).
#[must_use]
pub fn url_host(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests;
