//! The user a ban carries: only a user the tap verified on every request the engine judged
//! for that client, never a claim.
use std::time::Duration;

use super::super::{BanOutcome, Decision, EngineConfig};
use super::{Sim, req};

fn user_of(d: &Decision) -> Option<String> {
    match d {
        Decision::Ban { user, .. } => user.clone(),
        other => panic!("not a ban: {other:?}"),
    }
}

/// Two backdoor probes by `user` from two addresses: a ban.
fn probes(sim: &mut Sim, user: &str, verified: bool) -> Decision {
    sim.send(&req("192.0.2.1", "/shell.php").user(user, verified));
    sim.advance(Duration::from_secs(1));
    sim.send(&req("192.0.2.2", "/c99.php").user(user, verified))
}

#[test]
fn a_verified_user_is_banned_with_the_address() {
    let mut sim = Sim::default();
    let d = probes(&mut sim, "eve", true);
    assert_eq!(user_of(&d), Some("eve".to_owned()));
    let Decision::Ban { target, .. } = &d else {
        unreachable!()
    };
    assert_eq!(target.to_string(), "192.0.2.2");
}

#[test]
fn an_order_given_again_still_names_the_user() {
    let mut sim = Sim::default();
    sim.outcome = Some(BanOutcome::Failed);
    let first = probes(&mut sim, "eve", true);
    assert_eq!(user_of(&first), Some("eve".to_owned()));
    sim.advance(Duration::from_secs(1));
    let again = sim.send(&req("192.0.2.2", "/").user("eve", true));
    let Decision::Ban { retry, .. } = &again else {
        panic!("{again:?}")
    };
    assert!(*retry);
    assert_eq!(user_of(&again), Some("eve".to_owned()));
}

#[test]
fn claimed_users_are_never_banned_even_when_trusted_for_keying() {
    // Keyed by the claimed id (trust_unverified_users), but the ban is the address's only: a
    // claim can name anyone.
    let mut sim = Sim::new(&EngineConfig {
        trust_unverified_users: true,
        ..EngineConfig::default()
    });
    let d = probes(&mut sim, "alice", false);
    assert_eq!(user_of(&d), None);
    // One claimed request among verified ones is enough to withhold the user ban.
    let mut sim = Sim::new(&EngineConfig {
        trust_unverified_users: true,
        ..EngineConfig::default()
    });
    sim.send(&req("192.0.2.9", "/").user("bob", true));
    sim.send(&req("192.0.2.1", "/shell.php").user("bob", false));
    sim.advance(Duration::from_secs(1));
    let d = sim.send(&req("192.0.2.2", "/c99.php").user("bob", true));
    assert_eq!(user_of(&d), None);
}

#[test]
fn anonymous_clients_and_bad_ids_ban_the_address_alone() {
    let mut sim = Sim::default();
    sim.send(&req("192.0.2.5", "/shell.php"));
    sim.advance(Duration::from_secs(1));
    assert_eq!(user_of(&sim.send(&req("192.0.2.5", "/c99.php"))), None);
    // A verified id guard would not store (over 256 bytes): the address only.
    let long = "u".repeat(300);
    assert_eq!(user_of(&probes(&mut sim, &long, true)), None);
}

#[test]
fn lifting_a_user_ban_forgets_it_in_the_engine() {
    let mut sim = Sim::default();
    assert!(matches!(
        probes(&mut sim, "eve", true),
        Decision::Ban { .. }
    ));
    sim.advance(Duration::from_secs(1));
    assert!(matches!(
        sim.send(&req("192.0.2.3", "/").user("eve", true)),
        Decision::Block { .. }
    ));
    sim.engine.unbanned_user("eve");
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        sim.send(&req("192.0.2.3", "/").user("eve", true)),
        Decision::Allow
    );
}
