//! `guard ban add|rm|ls --user`: user bans over the control socket.
use std::path::Path;

use guard_core::tap::identity::check_user_id;

use super::{print_table, ttl_secs};
use crate::clock::{format_duration, format_utc, now_ms};
use crate::control::{self, Request};
use crate::store::UserBanRecord;

/// `guard ban add --user ID`.
pub(super) fn add(
    id: String,
    ttl: Option<&str>,
    reason: Option<String>,
    socket: &Path,
) -> anyhow::Result<()> {
    check_user_id(&id)?;
    let req = Request::UserBanAdd {
        id,
        ttl_secs: ttl_secs(ttl)?,
        reason,
    };
    let ban: UserBanRecord = control::call(socket, &req)?;
    println!(
        "banned user {} until {}",
        ban.id.escape_debug(),
        ban.expires_at.map_or("forever".into(), format_utc)
    );
    Ok(())
}

/// `guard ban rm --user ID`.
pub(super) fn rm(id: String, socket: &Path) -> anyhow::Result<()> {
    let ban: UserBanRecord = control::call(socket, &Request::UserBanRm { id })?;
    println!("unbanned user {}", ban.id.escape_debug());
    Ok(())
}

/// `guard ban ls --user [--json]`.
pub(super) fn ls(json: bool, socket: &Path) -> anyhow::Result<()> {
    let bans: Vec<UserBanRecord> = control::call(socket, &Request::UserBanLs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&bans)?);
    } else {
        print_user_bans(&bans, now_ms());
    }
    Ok(())
}

/// The rows of `guard ban ls --user`: id (escaped: it came from the network), the address
/// banned with it, reason, origin, created, expires.
#[must_use]
pub fn user_rows(bans: &[UserBanRecord], now: u64) -> Vec<Vec<String>> {
    bans.iter()
        .map(|b| {
            vec![
                b.id.escape_debug().to_string(),
                b.addr.map_or_else(|| "-".into(), |a| a.to_string()),
                b.reason.escape_debug().to_string(),
                b.origin.to_string(),
                format_utc(b.created_at),
                b.expires_at.map_or_else(
                    || "never".into(),
                    |t| {
                        format!(
                            "{} (in {})",
                            format_utc(t),
                            format_duration(std::time::Duration::from_millis(
                                t.saturating_sub(now)
                            ))
                        )
                    },
                ),
            ]
        })
        .collect()
}

fn print_user_bans(bans: &[UserBanRecord], now: u64) {
    print_table(
        &["USER", "ADDRESS", "REASON", "ORIGIN", "CREATED", "EXPIRES"],
        &user_rows(bans, now),
    );
}
