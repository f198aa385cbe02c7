//! `guard stats`: every counter the daemon reports, as one table of dotted names grouped by
//! their first part (`engine.inspected`, `tap.eth0.packets`, `logs.written` …), or the daemon's
//! answer whole with `--json`. The table is built from the same JSON, so a counter added to any
//! group shows without touching this file.
use std::fmt::Write as _;

use serde_json::Value;

use crate::control::{self, Request, Stats};

/// Runs `guard stats`.
pub fn run(json: bool, socket: &std::path::Path) -> anyhow::Result<()> {
    let data: Box<Stats> = control::call(socket, &Request::Stats)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    print!("{}", render(&serde_json::to_value(&data)?));
    Ok(())
}

/// One counter: its dotted name and its value as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    name: String,
    value: String,
}

/// The table of `stats` (the daemon's answer as JSON): a header, then each group's rows,
/// groups separated by a blank line (in name order), names left-aligned and values right-aligned in one column.
/// A group that is off (`null`: no AI, no proxy) is one row saying `off`.
fn render(stats: &Value) -> String {
    let mut groups: Vec<Vec<Row>> = Vec::new();
    if let Value::Object(map) = stats {
        for (name, value) in map {
            let mut rows = Vec::new();
            if value.is_null() {
                rows.push(Row {
                    name: name.clone(),
                    value: "off".to_owned(),
                });
            } else {
                flatten(name, value, &mut rows);
            }
            if !rows.is_empty() {
                groups.push(rows);
            }
        }
    }
    let all = groups.iter().flatten();
    let name_w = all
        .clone()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("COUNTER".len());
    let value_w = all
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0)
        .max("VALUE".len());
    let mut out = String::new();
    let _ = writeln!(out, "{:<name_w$}  {:>value_w$}", "COUNTER", "VALUE");
    for (i, rows) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for r in rows {
            let _ = writeln!(out, "{:<name_w$}  {:>value_w$}", r.name, r.value);
        }
    }
    if groups.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// The numbers and flags in `value` as rows named `prefix.key…`, in the order they come. The
/// elements of a list are named by their `interface` or `name` field when they have one (a
/// tap's counters are `tap.eth0.…`), else by their index. Texts are labels, not counters, and
/// are left out.
fn flatten(prefix: &str, value: &Value, rows: &mut Vec<Row>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, rows);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let label = ["interface", "name"]
                    .iter()
                    .find_map(|k| item.get(k).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_owned);
                flatten(&format!("{prefix}.{label}"), item, rows);
            }
        }
        Value::Number(n) => rows.push(Row {
            name: prefix.to_owned(),
            value: n.to_string(),
        }),
        Value::Bool(b) => rows.push(Row {
            name: prefix.to_owned(),
            value: if *b { "yes" } else { "no" }.to_owned(),
        }),
        Value::String(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_is_flattened_grouped_and_aligned() {
        let stats = serde_json::json!({
            "xdp": {"passed": 7, "dropped_ban": 12345},
            "tap": [
                {"interface": "eth0", "packets": 3, "flows": {"open": 1}},
                {"interface": "lo", "packets": 0}
            ],
            "engine": {"inspected": 42, "bans_ordered": 2},
            "ai": null,
            "logs": {"written": 9, "stored": 9},
            "quota": {"days": {"spent": 1}, "persisted": true}
        });
        let text = render(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "COUNTER              VALUE",
                "ai                     off",
                "",
                "engine.bans_ordered      2",
                "engine.inspected        42",
                "",
                "logs.stored              9",
                "logs.written             9",
                "",
                "quota.days.spent         1",
                "quota.persisted        yes",
                "",
                "tap.eth0.flows.open      1",
                "tap.eth0.packets         3",
                "tap.lo.packets           0",
                "",
                "xdp.dropped_ban      12345",
                "xdp.passed               7",
            ]
        );
    }

    /// The daemon's real answer type: every group it has shows in the table.
    #[test]
    fn the_stats_answer_shows_all_its_groups() {
        let stats = Stats {
            xdp: [("passed".to_owned(), 1)].into_iter().collect(),
            tap: serde_json::json!([{"interface": "veth0", "packets": 5}]),
            engine: crate::judge::JudgeStats::default(),
            engine_core: serde_json::json!({"requests": 4}),
            ai: None,
            logs: control::LogCounters::default(),
            daemon: control::DaemonCounters::default(),
            inline: None,
            quotas: None,
            proxy: None,
        };
        let text = render(&serde_json::to_value(&stats).unwrap());
        for name in [
            "xdp.passed",
            "tap.veth0.packets",
            "engine.inspected",
            "engine.bans_ordered",
            "engine_core.requests",
            "logs.written",
            "daemon.",
            "ai ",
            "inline ",
            "proxy ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
    }
}
