use std::sync::Arc;

use super::*;
use crate::quota::persist::TREE_QUOTA;
use crate::quota::plans::{PlanStore, TREE_PLANS};
use crate::quota::tests::{config, event, jwt_user};

const PLANS: &str = r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/api/*"
lifetime = 2
[[quotas.plans.pro.rules]]
path = "/api/*"
per_minute = 100
lifetime = 5
"#;
const T: u64 = 1_800_000_030;

fn open(db: &sled::Db) -> QuotaCheck {
    let cfg = config(PLANS);
    let (q, _) = QuotaCheck::new(&cfg, Vec::new(), b"salt".to_vec(), 1)
        .unwrap()
        .with_store(db.open_tree(TREE_QUOTA).unwrap(), &cfg)
        .unwrap();
    q.with_plan_store(Arc::new(
        PlanStore::open(db.open_tree(TREE_PLANS).unwrap()).unwrap(),
    ))
}

/// Alice's request (a verified user) from 198.51.100.1: admitted or not.
fn alice(q: &QuotaCheck) -> bool {
    let ev = event("198.51.100.1", "/api/items", &[], T);
    q.check_event(Some(&jwt_user("alice", true)), &ev)
        .decision
        .unwrap()
        .admitted
}

#[test]
fn a_plan_set_applies_at_once_and_a_reset_forgets_memory_and_store() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let q = open(&db);
    // Without a plan alice is anonymous, counted by address: lifetime 2.
    assert_eq!([alice(&q), alice(&q), alice(&q)], [true, true, false]);
    let entry = q.plan_set("alice", "pro").unwrap();
    assert_eq!((entry.plan.as_str(), entry.replaced), ("pro", None));
    let err = q.plan_set("alice", "gold").unwrap_err().to_string();
    assert!(
        err.contains("\"gold\"") && err.contains("anonymous, pro"),
        "{err}"
    );
    // On pro, counted as alice: five more.
    for _ in 0..5 {
        assert!(alice(&q));
    }
    assert!(!alice(&q));
    let u = q.usage("alice", T);
    assert_eq!(u.plan.as_deref(), Some("pro"));
    assert!(!u.key.contains("alice"));
    assert_eq!(u.rules.len(), 1, "{u:?}");
    let rule = &u.rules[0];
    assert_eq!((rule.plan.as_str(), rule.rule.as_str()), ("pro", "/api/*"));
    let windows: Vec<_> = rule
        .windows
        .iter()
        .map(|w| {
            (
                w.window.as_str(),
                w.used,
                w.remaining,
                w.reset_secs,
                w.resets_at,
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            ("minute", 5, 95, Some(30), Some(T + 30)),
            ("lifetime", 5, 0, None, None)
        ]
    );
    // The address's usage: the default plan's rule, 2 of 2 spent.
    let addr = q.usage("198.51.100.1", T);
    assert_eq!(addr.plan.as_deref(), Some("anonymous"));
    assert_eq!(addr.rules[0].windows[0].used, 2);
    // Written to the store, then reset: gone from memory and from the store.
    assert_eq!(q.persist_now(), 2);
    assert!(matches!(
        q.reset("alice", Some("/nope")),
        Err(AdminError::UnknownRule { .. })
    ));
    let done = q.reset("alice", Some("/api/*")).unwrap();
    assert_eq!(done.rules, ["pro: /api/*"]);
    assert!(alice(&q));
    assert_eq!(q.usage("alice", T).rules[0].windows[1].used, 1);
    drop(q);
    // After a restart: the plan is kept, and the count is the one after the reset.
    let q = open(&db);
    assert_eq!(q.plan_ls().unwrap()[0].plan, "pro");
    assert_eq!(q.usage("alice", T).rules[0].windows[1].used, 1);
    // Off the table: anonymous again, its address's quota still spent.
    assert_eq!(q.plan_rm("alice").unwrap().plan, "pro");
    assert!(matches!(q.plan_rm("alice"), Err(AdminError::NoPlan { .. })));
    assert!(!alice(&q));
    assert!(q.plan_ls().unwrap().is_empty());
    assert!(q.plan_set("", "pro").is_err());
}
