//! Which bans `guard ban ls` (and `ban rm --match`) selects, in what order, and how a ban is
//! shown: the stored record joined with its XDP counters.
use std::net::IpAddr;

use serde::Serialize;

use crate::engine::Evidence;
use crate::net::Net;
use crate::store::{BanRecord, Origin};

/// Which bans `guard ban ls` shows, in what order, how many.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BanFilter {
    /// Only bans that cover this address (its exact ban and every CIDR containing it).
    pub ip: Option<IpAddr>,
    /// Only bans inside this network.
    pub range: Option<Net>,
    /// Only bans of this origin.
    pub origin: Option<Origin>,
    /// Only bans whose reason contains this text (case-insensitive).
    pub reason: Option<String>,
    pub sort: BanSort,
    /// At most this many, after sorting.
    pub limit: Option<usize>,
}

/// Order of `guard ban ls`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum BanSort {
    /// By address (IPv4 first), then prefix length.
    #[default]
    Addr,
    /// Most packets dropped first.
    Packets,
    /// Newest first.
    Created,
    /// Soonest to expire first; permanent bans last.
    Expires,
}

impl BanFilter {
    /// Whether `b` passes the filters (the order and the limit apply to the result).
    #[must_use]
    pub fn matches(&self, b: &BanRecord) -> bool {
        self.ip.is_none_or(|ip| b.target.contains(ip))
            && self
                .range
                .is_none_or(|r| r.contains(b.target.addr()) && b.target.prefix() >= r.prefix())
            && self.origin.is_none_or(|o| b.origin == o)
            && self
                .reason
                .as_deref()
                .is_none_or(|text| b.reason.to_lowercase().contains(&text.to_lowercase()))
    }

    /// Sorts and truncates the matching bans.
    #[must_use]
    pub fn arrange(&self, mut views: Vec<BanView>) -> Vec<BanView> {
        match self.sort {
            // The store's own order: family, address, prefix.
            BanSort::Addr => {}
            BanSort::Packets => views.sort_by_key(|v| std::cmp::Reverse(v.packets)),
            BanSort::Created => views.sort_by_key(|v| std::cmp::Reverse(v.created_at)),
            BanSort::Expires => views.sort_by_key(|v| v.expires_at.unwrap_or(u64::MAX)),
        }
        if let Some(n) = self.limit {
            views.truncate(n);
        }
        views
    }
}

/// A ban as shown by `guard ban ls`: the stored record joined with the XDP counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BanView {
    pub addr: Net,
    pub reason: String,
    pub origin: Origin,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `null` = permanent.
    pub expires_at: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Wall-clock ms of the last dropped packet; `null` = never hit.
    pub last_hit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::engine::deserialize_stored"
    )]
    pub evidence: Option<Evidence>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, origin: Origin, reason: &str) -> BanRecord {
        BanRecord {
            target: target.parse().unwrap(),
            reason: reason.into(),
            origin,
            created_at: 0,
            expires_at: None,
            evidence: None,
        }
    }

    fn view(addr: &str, packets: u64, created_at: u64, expires_at: Option<u64>) -> BanView {
        BanView {
            addr: addr.parse().unwrap(),
            reason: String::new(),
            origin: Origin::Cli,
            created_at,
            expires_at,
            packets,
            bytes: 0,
            last_hit: None,
            evidence: None,
        }
    }

    #[test]
    fn filters_select_by_covering_address_range_origin_and_reason() {
        let bans = [
            record("192.0.2.7", Origin::Engine, "SQL injection: 3 hits"),
            record("192.0.2.0/24", Origin::Import, "blocklist"),
            record("198.51.100.9", Origin::Cli, "manual"),
            record("2001:db8::1", Origin::RateLimit, "flood"),
        ];
        let pick = |f: BanFilter| -> Vec<String> {
            bans.iter()
                .filter(|b| f.matches(b))
                .map(|b| b.target.to_string())
                .collect()
        };
        let all = pick(BanFilter::default());
        assert_eq!(all.len(), 4);
        assert_eq!(
            pick(BanFilter {
                ip: Some("192.0.2.7".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7", "192.0.2.0/24"]
        );
        assert_eq!(
            pick(BanFilter {
                ip: Some("192.0.2.8".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.0/24"]
        );
        // Inside a range: the /24 itself and its host, not a wider or foreign ban.
        assert_eq!(
            pick(BanFilter {
                range: Some("192.0.2.0/25".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7"]
        );
        assert_eq!(
            pick(BanFilter {
                range: Some("192.0.0.0/16".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7", "192.0.2.0/24"]
        );
        assert_eq!(
            pick(BanFilter {
                origin: Some(Origin::RateLimit),
                ..BanFilter::default()
            }),
            ["2001:db8::1"]
        );
        assert_eq!(
            pick(BanFilter {
                reason: Some("sql INJECTION".into()),
                origin: Some(Origin::Engine),
                ..BanFilter::default()
            }),
            ["192.0.2.7"]
        );
    }

    #[test]
    fn sorting_and_limit() {
        let views = || {
            vec![
                view("192.0.2.1", 5, 100, None),
                view("192.0.2.2", 50, 300, Some(9_000)),
                view("192.0.2.3", 0, 200, Some(1_000)),
            ]
        };
        let order = |sort, limit| -> Vec<String> {
            BanFilter {
                sort,
                limit,
                ..BanFilter::default()
            }
            .arrange(views())
            .iter()
            .map(|v| v.addr.to_string())
            .collect()
        };
        assert_eq!(
            order(BanSort::Packets, None),
            ["192.0.2.2", "192.0.2.1", "192.0.2.3"]
        );
        assert_eq!(
            order(BanSort::Created, None),
            ["192.0.2.2", "192.0.2.3", "192.0.2.1"]
        );
        // Soonest first, permanent last.
        assert_eq!(
            order(BanSort::Expires, None),
            ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
        );
        assert_eq!(order(BanSort::Packets, Some(1)), ["192.0.2.2"]);
        assert_eq!(order(BanSort::Addr, Some(2)), ["192.0.2.1", "192.0.2.2"]);
    }
}
