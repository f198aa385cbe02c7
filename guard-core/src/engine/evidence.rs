//! The evidence a ban carries: which rule made it, how often the address offended, the
//! client's window counts and sample paths, and the details of the rule that fired. The engine
//! builds it, the daemon stores it with the ban record (as JSON in sled) and reads the offence
//! count from its field, and `guard ban ls --json` shows it.
//!
//! Stored records outlive versions of this type: [`Evidence::from_stored`] reads any JSON an
//! earlier version (or another writer) left, keeping what it cannot type in [`Evidence::extra`],
//! so that a restart never loses a ban over the shape of its evidence.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Rule;

/// What led to a ban. Every field but `rule` is optional: engine bans fill most of them, the
/// daemon's own bans (a packet-rate ban) only their rule and details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The rule that made the ban: an engine [`Rule`] name, or a rule of the daemon's own
    /// (`xdp-rate`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// The address the banned request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// The verified user the engine judged, when it keyed the client by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Which ban of this address this is within the offender memory (1 = the first); the
    /// daemon stores it so that escalation survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offence: Option<u32>,
    /// The ban's duration as decided (after escalation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Decided in shadow mode (only logged, never pushed); present only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The client's window counts when the ban was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// The client's recent paths, oldest first (cut to the configured length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_paths: Vec<String>,
    /// What the rule itself measured.
    #[serde(flatten)]
    pub details: Details,
    /// Anything else: fields of other writers or earlier versions, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A client's sliding-window counts, as the engine measured them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Non-static requests in the last 10 s.
    pub requests_10s: u32,
    /// Requests of any kind (static included) in the last 10 s.
    pub all_requests_10s: u32,
    pub requests_2min: u32,
    /// 4xx answers (and 5xx, if configured) in the last two minutes.
    pub errors_2min: u32,
    pub requests_24h: u32,
    pub distinct_paths_1min: u32,
    /// Distinct non-static paths answered 400/403/404 in the last minute.
    pub probe_paths_1min: u32,
    /// Longest run of sequential ids under one path prefix in the last minute.
    pub sequential_ids_1min: u32,
}

/// The rule-specific part of the evidence: each rule fills its own fields, the rest stay
/// `None` and are not shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// Scenario buckets: the hits that overflowed the bucket, and its leak time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_secs: Option<u64>,
    /// Probing: distinct paths answered 400/403/404 within the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_probe_paths: Option<u32>,
    /// A validator block: its category (guard's identifier) and score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator_score: Option<u32>,
    /// A hard block: the grey score and the rules that gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_rules: Option<Vec<Rule>>,
    /// Repeated blocks: the rule of the last block and its own details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block_rule: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block_details: Option<Box<Details>>,
    /// An AI verdict: the triage that asked (score, rules, counts, how long before the ban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage_score: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage_rules: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage_counts: Option<Counts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triaged_secs_ago: Option<u32>,
    /// An AI verdict without a triage record: why it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage: Option<String>,
    /// The daemon's packet-rate ban: the configured limit and the packets XDP dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

impl Details {
    /// True when no rule filled anything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Evidence {
    /// Reads evidence as stored, whatever its shape: the typed fields when they parse, else
    /// everything kept untyped in `extra` (an object's fields as they were, any other value
    /// under the key `value`). Never fails, so an odd record never costs its ban.
    #[must_use]
    pub fn from_stored(value: Value) -> Self {
        if let Ok(evidence) = Self::deserialize(&value) {
            return evidence;
        }
        let extra = match value {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        Self {
            extra,
            ..Self::default()
        }
    }
}

/// For `#[serde(deserialize_with = "…")]` on an `Option<Evidence>` field of a stored record:
/// absent or `null` is `None`, anything else goes through [`Evidence::from_stored`].
///
/// # Errors
/// Only when the input is not JSON at all.
pub fn deserialize_stored<'de, D>(deserializer: D) -> Result<Option<Evidence>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => None,
        Some(value) => Some(Evidence::from_stored(value)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An engine ban's evidence as an earlier version stored it (built with `json!`): every
    /// field comes back typed, and written again it has the same keys.
    #[test]
    fn evidence_stored_by_earlier_versions_loads_typed() {
        let old = json!({
            "rule": "repeated_blocks",
            "client": "192.0.2.7",
            "user": null,
            "offence": 2,
            "ttl_secs": 14400,
            "shadow": false,
            "counts": {"requests_10s": 3, "all_requests_10s": 4, "requests_2min": 9,
                       "errors_2min": 1, "requests_24h": 40, "distinct_paths_1min": 2,
                       "probe_paths_1min": 0, "sequential_ids_1min": 0},
            "sample_paths": ["/a", "/b"],
            "last_block_rule": "validator_block",
            "last_block_details": {"validator_category": "sql_injection", "validator_score": 5},
        });
        let e = Evidence::from_stored(old.clone());
        assert_eq!(e.rule, "repeated_blocks");
        assert_eq!(e.client, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(e.offence, Some(2));
        assert_eq!(e.counts.map(|c| c.requests_24h), Some(40));
        assert_eq!(e.details.last_block_rule, Some(Rule::ValidatorBlock));
        assert_eq!(
            e.details
                .last_block_details
                .as_ref()
                .and_then(|d| d.validator_score),
            Some(5)
        );
        assert!(e.extra.is_empty(), "{:?}", e.extra);
        let again = serde_json::to_value(&e).unwrap();
        let mut expected = old;
        // Only the empty markers are left out now.
        let map = expected.as_object_mut().unwrap();
        map.remove("user");
        map.remove("shadow");
        assert_eq!(again, expected);
    }

    /// The daemon's packet-rate evidence and unknown fields of other writers.
    #[test]
    fn unknown_fields_are_kept() {
        let old =
            json!({"rule": "xdp-rate", "limit_pps": 1000, "dropped": 77, "source": "crowdsec"});
        let e = Evidence::from_stored(old.clone());
        assert_eq!(e.rule, "xdp-rate");
        assert_eq!(
            (e.details.limit_pps, e.details.dropped),
            (Some(1000), Some(77))
        );
        assert_eq!(e.extra.get("source"), Some(&json!("crowdsec")));
        assert_eq!(serde_json::to_value(&e).unwrap(), old);
    }

    /// Evidence that does not fit the type at all (a known field of another type, a bare
    /// value) still loads, untyped, and is shown as it was.
    #[test]
    fn evidence_of_any_shape_loads() {
        #[derive(Deserialize)]
        struct Record {
            #[serde(default, deserialize_with = "deserialize_stored")]
            evidence: Option<Evidence>,
        }
        let odd = json!({"rule": "backdoor", "offence": "third", "note": [1, 2]});
        let e = Evidence::from_stored(odd.clone());
        assert_eq!(e.offence, None);
        assert_eq!(serde_json::to_value(&e).unwrap(), odd);
        let bare = json!("banned by hand in 2024");
        let e = Evidence::from_stored(bare.clone());
        assert_eq!(e.extra.get("value"), Some(&bare));

        let r: Record = serde_json::from_str(r#"{"evidence": null}"#).unwrap();
        assert!(r.evidence.is_none());
        let r: Record = serde_json::from_str("{}").unwrap();
        assert!(r.evidence.is_none());
        let r: Record = serde_json::from_str(r#"{"evidence": [1, "x"]}"#).unwrap();
        assert_eq!(
            r.evidence.unwrap().extra.get("value"),
            Some(&json!([1, "x"]))
        );
    }
}
