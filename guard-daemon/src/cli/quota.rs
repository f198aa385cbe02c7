//! `guard plan set|rm|ls` and `guard quota show|reset`: the plan quotas over the control
//! socket. Tables by default, `--json` for scripts.
use std::path::Path;

use clap::Subcommand;

use super::print_table;
use crate::clock::format_utc;
use crate::control::{self, Request};
use crate::quota::admin::{QuotaReset, QuotaUsage};
use crate::quota::plans::PlanEntry;

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Put a user on a plan (the `table` source of `quotas.lookup`); takes effect at once.
    Set { user: String, plan: String },
    /// Take a user off the plan table.
    Rm { user: String },
    /// List the plan table.
    Ls(super::JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Usage and reset time per window of a user's (or an address's) rules.
    Show {
        /// A user id, or an IP address (clients without a user are counted by address).
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget a user's (or an address's) counters, so its next request starts afresh.
    Reset {
        target: String,
        /// Only the rules with this path pattern, as `guard quota show` prints it.
        #[arg(long, value_name = "PATH")]
        rule: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// `guard plan …`.
pub(super) fn plan(cmd: PlanCommand, socket: &Path) -> anyhow::Result<()> {
    match cmd {
        PlanCommand::Set { user, plan } => {
            let e: PlanEntry = control::call(socket, &Request::PlanSet { user, plan })?;
            match e.replaced {
                Some(old) => println!(
                    "user {} is on plan {} (was {})",
                    e.user.escape_debug(),
                    e.plan,
                    old.escape_debug()
                ),
                None => println!("user {} is on plan {}", e.user.escape_debug(), e.plan),
            }
        }
        PlanCommand::Rm { user } => {
            let e: PlanEntry = control::call(socket, &Request::PlanRm { user })?;
            println!(
                "user {} is off the plan table (was on {})",
                e.user.escape_debug(),
                e.plan.escape_debug()
            );
        }
        PlanCommand::Ls(f) => {
            let rows: Vec<PlanEntry> = control::call(socket, &Request::PlanLs)?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|e| {
                        let plan = e.plan.escape_debug().to_string();
                        vec![
                            e.user.escape_debug().to_string(),
                            if e.known {
                                plan
                            } else {
                                format!("{plan} (not defined: the default plan applies)")
                            },
                        ]
                    })
                    .collect();
                print_table(&["USER", "PLAN"], &table);
            }
        }
    }
    Ok(())
}

/// `guard quota …`.
pub(super) fn quota(cmd: QuotaCommand, socket: &Path) -> anyhow::Result<()> {
    match cmd {
        QuotaCommand::Show { target, json } => {
            let u: QuotaUsage = control::call(socket, &Request::QuotaShow { target })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                println!(
                    "{} (key {}), plan {}",
                    u.target.escape_debug(),
                    u.key,
                    u.plan.as_deref().unwrap_or("-")
                );
                print_table(
                    &["PLAN", "RULE", "WINDOW", "USED", "LIMIT", "LEFT", "RESETS"],
                    &usage_rows(&u),
                );
            }
        }
        QuotaCommand::Reset { target, rule, json } => {
            let r: QuotaReset = control::call(socket, &Request::QuotaReset { target, rule })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.rules.is_empty() {
                println!("{}: no counters to reset", r.target.escape_debug());
            } else {
                println!(
                    "{}: counters reset for {}",
                    r.target.escape_debug(),
                    r.rules.join("; ")
                );
            }
        }
    }
    Ok(())
}

/// One row per window of each rule of `guard quota show`.
#[must_use]
pub fn usage_rows(u: &QuotaUsage) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in &u.rules {
        let rule = match &r.method {
            Some(m) => format!("{m} {}", r.rule),
            None => r.rule.clone(),
        };
        for w in &r.windows {
            rows.push(vec![
                r.plan.clone(),
                rule.clone(),
                w.window.clone(),
                w.used.to_string(),
                w.limit.to_string(),
                w.remaining.to_string(),
                w.resets_at.map_or_else(
                    || "never".to_owned(),
                    |at| {
                        format!(
                            "{} (in {} s)",
                            format_utc(at * 1000),
                            w.reset_secs.unwrap_or(0)
                        )
                    },
                ),
            ]);
        }
    }
    rows
}
