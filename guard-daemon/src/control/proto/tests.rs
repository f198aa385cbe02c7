//! The control messages' unit tests: typed replies round-trip, errors and unexpected replies,
//! requests classified as changes or reads, the wire format kept.
use serde_json::json;

use super::*;
use crate::bans::Origin;
use crate::engine::Evidence;

fn view() -> BanView {
    BanView {
        addr: "192.0.2.7".parse().unwrap(),
        reason: "backdoor: 2 hits".into(),
        origin: Origin::Engine,
        created_at: 1_700_000_000_000,
        expires_at: Some(1_700_003_600_000),
        packets: 12,
        bytes: 840,
        last_hit: None,
        evidence: Some(Evidence {
            rule: "backdoor".into(),
            offence: Some(2),
            sample_paths: vec!["/shell.php".into()],
            ..Evidence::default()
        }),
    }
}

/// What the daemon writes, the CLI reads back as the same typed value; the content is
/// still under `data`, tagged by `reply`.
#[test]
fn typed_replies_round_trip() {
    let line = serde_json::to_string(&Response::ok(vec![view()])).unwrap();
    let wire: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(wire["ok"], true);
    assert_eq!(wire["reply"], "bans");
    assert_eq!(wire["data"][0]["origin"], "engine");
    assert_eq!(wire["data"][0]["evidence"]["offence"], 2);
    assert!(wire.get("error").is_none());
    let Response::Ok(reply) = serde_json::from_str(&line).unwrap() else {
        panic!("{line}")
    };
    let bans = Vec::<BanView>::from_reply(reply).unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].origin, Origin::Engine);
    assert_eq!(bans[0].evidence, view().evidence);

    let imported = Imported {
        banned: 2,
        refused: vec!["refusing to ban 10.0.0.1".into()],
    };
    let line = serde_json::to_string(&Response::ok(imported.clone())).unwrap();
    let Response::Ok(reply) = serde_json::from_str(&line).unwrap() else {
        panic!("{line}")
    };
    assert_eq!(Imported::from_reply(reply).unwrap(), imported);
}

#[test]
fn errors_and_unexpected_replies() {
    let line = serde_json::to_string(&Response::err("192.0.2.7 is not banned")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&line).unwrap(),
        json!({"ok": false, "error": "192.0.2.7 is not banned"})
    );
    let Response::Err(message) = serde_json::from_str(&line).unwrap() else {
        panic!("{line}")
    };
    assert_eq!(message, "192.0.2.7 is not banned");
    // A reply of another type is an error naming both, not a panic or a default.
    let err = Removed::from_reply(Reply::TapPorts(vec![80])).unwrap_err();
    assert_eq!(
        err,
        UnexpectedReply {
            expected: "removed",
            got: "tap_ports"
        }
    );
    // The chain of a daemon error reaches the user, each cause once.
    let io = std::io::Error::from_raw_os_error(28);
    let store = crate::store::StoreError::Sled(sled::Error::Io(io));
    let ban = crate::bans::BanError::NotSaved {
        target: "192.0.2.7".parse().unwrap(),
        source: store,
    };
    let text = error_chain(&ban);
    assert_eq!(text, ban.to_string(), "the message quotes its cause");
    assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    let corrupt = crate::store::StoreError::Corrupt {
        tree: "bans",
        source: serde_json::from_str::<u8>("x").unwrap_err(),
    };
    assert_eq!(
        error_chain(&corrupt),
        "corrupt record in tree bans: expected value at line 1 column 1"
    );
    // A success with an unknown tag is unreadable.
    assert!(serde_json::from_str::<Response>(r#"{"ok":true,"reply":"bananas","data":1}"#).is_err());
}

/// Only what changes nothing is open to the read-only group; a change of the tap's ports
/// is a change, reading them is not.
#[test]
fn requests_are_classified_as_changes_or_reads() {
    let target: Net = "192.0.2.7".parse().unwrap();
    let changes = [
        Request::BanAdd {
            target,
            ttl_secs: None,
            reason: None,
            force: false,
            extend: true,
        },
        Request::BanRm {
            target,
            keep_history: false,
        },
        Request::BanRmMatching {
            filter: BanFilter::default(),
            keep_history: true,
        },
        Request::BanImport {
            entries: Vec::new(),
            force: false,
        },
        Request::AllowAdd {
            target,
            reason: None,
        },
        Request::AllowRm { target },
        Request::TapPorts {
            ports: Some(vec![80]),
        },
        Request::UserBanAdd {
            id: "alice".into(),
            ttl_secs: None,
            reason: None,
        },
        Request::UserBanRm { id: "alice".into() },
    ];
    for r in &changes {
        assert!(r.changes(), "{r:?}");
    }
    let reads = [
        Request::BanLs {
            filter: BanFilter::default(),
        },
        Request::AllowLs,
        Request::UserBanLs,
        Request::Stats,
        Request::Status,
        Request::Logs(LogsRequest::default()),
        Request::LogPage(LogsRequest::default()),
        Request::TapPorts { ports: None },
    ];
    for r in &reads {
        assert!(!r.changes(), "{r:?}");
    }
    assert_eq!(changes[0].command(), "ban add");
    assert_eq!(reads[0].command(), "ban ls");
    assert_eq!(changes[7].command(), "ban add --user");
    let r: Request = serde_json::from_str(r#"{"op":"user_ban_ls"}"#).unwrap();
    assert!(!r.changes());
    let r: Request =
        serde_json::from_str(r#"{"op":"user_ban_add","id":"bob","ttl_secs":60,"reason":null}"#)
            .unwrap();
    assert!(r.changes());
    // From the wire, as a client would send it.
    let r: Request = serde_json::from_str(r#"{"op":"tap_ports","ports":[8080]}"#).unwrap();
    assert!(r.changes());
    let r: Request = serde_json::from_str(r#"{"op":"tap_ports","ports":null}"#).unwrap();
    assert!(!r.changes());
}

/// Requests keep their wire format: scripts that wrote `{"op":"ban_ls"}` still work.
#[test]
fn requests_keep_their_wire_format() {
    let r: Request = serde_json::from_str(r#"{"op":"ban_ls"}"#).unwrap();
    assert!(matches!(r, Request::BanLs { filter } if filter.origin.is_none()));
    let r: Request =
        serde_json::from_str(r#"{"op":"ban_ls","filter":{"origin":"rate-limit"}}"#).unwrap();
    assert!(matches!(r, Request::BanLs { filter } if filter.origin == Some(Origin::RateLimit)));
    let r: Request = serde_json::from_str(r#"{"op":"stats"}"#).unwrap();
    assert!(matches!(r, Request::Stats));
    assert_eq!(
        serde_json::to_value(Request::BanRm {
            target: "10.0.0.0/8".parse().unwrap(),
            keep_history: false,
        })
        .unwrap(),
        json!({"op": "ban_rm", "target": "10.0.0.0/8"})
    );
    let r: Request =
        serde_json::from_str(r#"{"op":"ban_rm","target":"10.0.0.5","keep_history":true}"#).unwrap();
    assert!(matches!(
        r,
        Request::BanRm {
            keep_history: true,
            ..
        }
    ));
    // `logs` with an address, as sent before `ip` took a network, and with a network.
    let r: Request = serde_json::from_str(r#"{"op":"logs","ip":"192.0.2.7"}"#).unwrap();
    let Request::Logs(q) = r else { panic!("{r:?}") };
    assert_eq!(q.ip, Some("192.0.2.7".parse().unwrap()));
    let r: Request =
        serde_json::from_str(r#"{"op":"log_page","ip":"2001:db8::/32","limit":100}"#).unwrap();
    let Request::LogPage(q) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        q.ip.map(|n| n.to_string()).as_deref(),
        Some("2001:db8::/32")
    );
}
