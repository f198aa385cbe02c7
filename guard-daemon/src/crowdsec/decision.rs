//! The decisions of a LAPI's `/v1/decisions/stream` answer, checked one by one: what the
//! network sends is data, so a decision that is malformed, of an unknown scope, for a range
//! wider than allowed or already over is refused and counted, never an error of the whole
//! answer (and never a panic).
use std::net::IpAddr;
use std::time::Duration;

use guard_core::tap::identity::check_user_id;
use serde::Deserialize;

use crate::net::Net;

/// What a decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Scope `ip` (a /32 or /128) or `range`.
    Net(Net),
    /// Scope `username`: a user ban, enforced by the inline paths.
    User(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Net(n) => write!(f, "{n}"),
            Self::User(u) => write!(f, "user {:?}", u.escape_debug().to_string()),
        }
    }
}

/// A ban decision guard can enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The LAPI's id of the decision (deletions name it).
    pub id: i64,
    pub target: Target,
    /// What is left of it, as the LAPI says.
    pub ttl: Duration,
    /// The scenario that made it (`crowdsecurity/ssh-bf`, `guard/backdoor`, …), for the reason.
    pub scenario: String,
}

/// One decision as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Ban(Ban),
    /// A decision of another type (`captcha`, …): counted, not enforced.
    OtherType(String),
    /// Refused: why.
    Invalid(String),
}

/// The shortest prefixes a `range` decision may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widest {
    pub v4: u8,
    pub v6: u8,
}

/// A decision as the LAPI sends it; every field optional so that one odd decision does not
/// refuse its neighbours.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    scenario: Option<String>,
}

/// The stream answer: `new` and `deleted`, each a list or `null`.
#[derive(Debug, Default)]
pub struct Stream {
    pub new: Vec<Read>,
    pub deleted: Vec<Read>,
}

/// Why a stream answer is not one at all.
#[derive(Debug, thiserror::Error)]
#[error("the LAPI's decision stream is not the expected JSON object: {source}")]
pub struct StreamError {
    #[source]
    source: serde_json::Error,
}

#[derive(Deserialize)]
struct RawStream {
    #[serde(default)]
    new: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    deleted: Option<Vec<serde_json::Value>>,
}

/// Reads a stream answer; each decision is checked on its own (see [`read`]).
pub fn parse_stream(body: &[u8], widest: Widest) -> Result<Stream, StreamError> {
    let raw: RawStream = serde_json::from_slice(body).map_err(|source| StreamError { source })?;
    let each = |list: Option<Vec<serde_json::Value>>| -> Vec<Read> {
        list.unwrap_or_default()
            .into_iter()
            .map(|v| read(v, widest))
            .collect()
    };
    Ok(Stream {
        new: each(raw.new),
        deleted: each(raw.deleted),
    })
}

/// Checks one decision. A deleted decision carries a negative duration: `ttl` is then zero.
pub fn read(value: serde_json::Value, widest: Widest) -> Read {
    let raw: Raw = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return Read::Invalid(format!("not a decision object: {e}")),
    };
    let Some(id) = raw.id else {
        return Read::Invalid("no id".into());
    };
    let kind = raw.kind.unwrap_or_default();
    if !kind.eq_ignore_ascii_case("ban") {
        return Read::OtherType(kind);
    }
    let value = raw.value.unwrap_or_default();
    let scope = raw.scope.unwrap_or_default().to_ascii_lowercase();
    let target = match scope.as_str() {
        "ip" => match value.parse::<IpAddr>() {
            Ok(ip) => Target::Net(Net::host(ip).unmapped()),
            Err(_) => {
                return Read::Invalid(format!("ip decision {id}: {value:?} is not an address"));
            }
        },
        "range" => match value.parse::<Net>() {
            Ok(net) => {
                let net = net.unmapped();
                let min = match net.addr() {
                    IpAddr::V4(_) => widest.v4,
                    IpAddr::V6(_) => widest.v6,
                };
                if net.prefix() < min {
                    return Read::Invalid(format!(
                        "range decision {id}: {net} is wider than /{min} (crowdsec.min_prefix_v4, \
                         crowdsec.min_prefix_v6)"
                    ));
                }
                Target::Net(net)
            }
            Err(e) => return Read::Invalid(format!("range decision {id}: {e}")),
        },
        "username" => match check_user_id(&value) {
            Ok(()) => Target::User(value),
            Err(e) => return Read::Invalid(format!("username decision {id}: {e}")),
        },
        other => {
            return Read::Invalid(format!(
                "decision {id}: scope {:?} is not ip, range or username",
                other.escape_debug().to_string()
            ));
        }
    };
    let ttl = match raw.duration.as_deref().map(go_duration) {
        Some(Some(d)) => d,
        // Deleted decisions have a negative duration; a new one with it is already over.
        Some(None) | None => Duration::ZERO,
    };
    let scenario: String = raw
        .scenario
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Read::Ban(Ban {
        id,
        target,
        ttl,
        scenario,
    })
}

/// A Go duration (`3h59m55.41s`, `1h`, `850ms`); `None` for a negative or unreadable one.
#[must_use]
pub fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.starts_with('-') {
        return None;
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * secs;
    }
    // A century at most: more is permanent for any purpose, and keeps the conversion finite.
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(3.2e9)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Widest = Widest { v4: 16, v6: 48 };

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h"), Some(Duration::from_hours(1)));
        assert_eq!(
            go_duration("3h59m55.5s"),
            Some(Duration::from_millis(14_395_500))
        );
        assert_eq!(go_duration("850ms"), Some(Duration::from_millis(850)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["-11.4ms", "", "h", "5x", "1.2.3s", "99999999999999999999h"] {
            let got = go_duration(bad);
            assert!(
                got.is_none_or(|d| d.as_secs() <= 3_200_000_000),
                "{bad}: {got:?}"
            );
        }
        assert_eq!(go_duration("-11.4ms"), None);
    }

    #[test]
    fn a_stream_of_the_packaged_lapi_is_read_decision_by_decision() {
        // As crowdsec 1.4.6 answers, plus what it must never be trusted for.
        let body = br#"{"deleted":[{"duration":"-11.47ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'm'","scope":"Ip","type":"ban","value":"192.0.2.7"}],
            "new":[{"duration":"59m58.43s","id":2,"origin":"cscli","scenario":"manual","scope":"Range","type":"ban","value":"198.51.100.0/24"},
                   {"duration":"4h","id":3,"scope":"username","type":"ban","value":"bob"},
                   {"duration":"4h","id":4,"scope":"Ip","type":"captcha","value":"192.0.2.9"},
                   {"duration":"4h","id":5,"scope":"Range","type":"ban","value":"10.0.0.0/8"},
                   {"duration":"4h","id":6,"scope":"Ip","type":"ban","value":"300.1.1.1"},
                   {"duration":"4h","id":7,"scope":"country","type":"ban","value":"FR"},
                   {"duration":"4h","id":8,"scope":"username","type":"ban","value":"eve\nforged"},
                   {"duration":"4h","scope":"Ip","type":"ban","value":"192.0.2.1"},
                   "not an object",
                   {"duration":"4h","id":9,"scope":"Ip","type":"ban","value":"::ffff:192.0.2.10"}]}"#;
        let s = parse_stream(body, W).unwrap();
        let Read::Ban(gone) = &s.deleted[0] else {
            panic!("{:?}", s.deleted)
        };
        assert_eq!(gone.id, 1);
        assert_eq!(gone.target, Target::Net("192.0.2.7".parse().unwrap()));
        assert_eq!(gone.ttl, Duration::ZERO);
        let bans: Vec<&Ban> = s
            .new
            .iter()
            .filter_map(|r| match r {
                Read::Ban(b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(
            bans.iter().map(|b| b.id).collect::<Vec<_>>(),
            [2, 3, 9],
            "{:?}",
            s.new
        );
        assert_eq!(
            bans[0].target,
            Target::Net("198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(bans[0].ttl, Duration::from_millis(3_598_430));
        assert_eq!(bans[1].target, Target::User("bob".into()));
        assert_eq!(
            bans[2].target,
            Target::Net("192.0.2.10".parse().unwrap()),
            "a mapped address is its IPv4 one"
        );
        assert_eq!(
            s.new
                .iter()
                .filter(|r| matches!(r, Read::OtherType(t) if t == "captcha"))
                .count(),
            1
        );
        let invalid: Vec<&String> = s
            .new
            .iter()
            .filter_map(|r| match r {
                Read::Invalid(why) => Some(why),
                _ => None,
            })
            .collect();
        assert_eq!(invalid.len(), 6, "{invalid:?}");
        assert!(invalid[0].contains("wider than /16"), "{}", invalid[0]);
        assert!(
            parse_stream(br#"{"new":null,"deleted":null}"#, W)
                .unwrap()
                .new
                .is_empty()
        );
        assert!(parse_stream(b"<html>", W).is_err());
        assert!(parse_stream(b"42", W).is_err());
    }
}
