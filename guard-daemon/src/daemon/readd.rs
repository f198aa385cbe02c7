//! `ban add` and `allow add` of a target that is already there: the answer says what it
//! replaced, a re-ban with `--extend` keeps the later end, and one without a reason keeps the
//! earlier ban's reason (and evidence).
use std::time::Duration;

use super::Shared;
use crate::bans::{BanError, BanRequest};
use crate::clock::now_ms;
use crate::control::Response;
use crate::control::proto::{AllowAdded, BanAdded, Replaced};
use crate::net::Net;
use crate::store::BanRecord;

/// Bans `req.target` (an empty reason: "manual", or the earlier ban's); see the module doc.
pub(super) fn ban_add(
    shared: &Shared,
    mut req: BanRequest,
    extend: bool,
) -> Result<Response, BanError> {
    let target = req.target;
    // Read on the owner thread, just before the ban: another operator's ban in between would
    // be replaced without being named, as before. A store that cannot be read (after a write
    // error sled refuses reads too) does not stop the ban: it is enforced all the same, and
    // the answer says it is not saved.
    let previous = shared
        .bans
        .read(move |bans| bans.store().ban(&target).ok().flatten())?;
    if let Some(p) = &previous {
        if req.reason.is_empty() {
            req.reason.clone_from(&p.reason);
            req.evidence.clone_from(&p.evidence);
        }
        if extend {
            req.ttl = Some(longer(req.ttl, shared.config.bans.default_ttl, p, now_ms()));
        }
    }
    if req.reason.is_empty() {
        "manual".clone_into(&mut req.reason);
    }
    let ban = shared.bans.ban(req)?;
    let replaced = previous.map(|p| Replaced {
        reason: p.reason,
        origin: p.origin,
        expires_at: p.expires_at,
    });
    Ok(Response::ok(Box::new(BanAdded { ban, replaced })))
}

/// The ttl that ends a ban at the later of `previous`'s end and the one `ttl` (default
/// `default_ttl`; zero: never) asks for, at `now` (ms).
fn longer(
    ttl: Option<Duration>,
    default_ttl: Duration,
    previous: &BanRecord,
    now: u64,
) -> Duration {
    let wanted = ttl.unwrap_or(default_ttl);
    if wanted.is_zero() {
        return Duration::ZERO;
    }
    let Some(end) = previous.expires_at else {
        // The earlier ban is permanent: it stays so.
        return Duration::ZERO;
    };
    let wanted_end = now.saturating_add(u64::try_from(wanted.as_millis()).unwrap_or(u64::MAX));
    if end > wanted_end {
        Duration::from_millis(end - now)
    } else {
        wanted
    }
}

/// Allowlists `target`, saying which reason it replaced if it was there already.
pub(super) fn allow_add(
    shared: &Shared,
    target: Net,
    reason: String,
) -> Result<Response, BanError> {
    // As for a ban, a store that cannot be read does not stop the change.
    let replaced_reason = shared
        .bans
        .allows()
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.target == target))
        .map(|a| a.reason);
    let entry = shared.bans.allow(target, reason)?;
    Ok(Response::ok(AllowAdded {
        entry,
        replaced_reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Origin;

    fn ban(expires_at: Option<u64>) -> BanRecord {
        BanRecord {
            target: "192.0.2.7".parse().unwrap(),
            reason: "r".into(),
            origin: Origin::Cli,
            created_at: 0,
            expires_at,
            evidence: None,
        }
    }

    #[test]
    fn extend_keeps_the_later_end() {
        let (h, now) = (Duration::from_hours(1), 1_000_000);
        let day = Duration::from_hours(24);
        // The earlier ban ends in 10 h: a 1 h re-ban keeps those 10 h.
        let ten_h = now + 10 * 3_600_000;
        assert_eq!(
            longer(Some(h), day, &ban(Some(ten_h)), now),
            Duration::from_hours(10)
        );
        // A longer one wins.
        assert_eq!(longer(Some(day), h, &ban(Some(ten_h)), now), day);
        // The default ttl when none is given.
        assert_eq!(longer(None, day, &ban(Some(ten_h)), now), day);
        // Permanent on either side stays permanent.
        assert_eq!(longer(Some(h), day, &ban(None), now), Duration::ZERO);
        assert_eq!(
            longer(Some(Duration::ZERO), day, &ban(Some(ten_h)), now),
            Duration::ZERO
        );
    }
}
