//! `guard logs`: a page of the request log (the newest 100 by default, with a footer when older
//! records match too), filtered by time, client address or network, path, status and verdict;
//! or, with `--follow`, the page and then new records as they come, in the same columns.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::clock::{format_utc, now_ms, parse_utc};
use crate::control::{self, LogsRequest, Request};
use crate::net::Net;
use crate::store::logs::format::Table;
use crate::store::logs::{LogPage, LogRecord, StatusFilter};

/// Records shown when `--limit` is not given.
const DEFAULT_LIMIT: &str = "100";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only records at or after this: a duration ago (10m, 2h, 7d), an RFC 3339 time
    /// (2026-11-18T11:06:40Z, or with an offset like +01:00) or a date (2026-11-18, its
    /// midnight UTC).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only records before this (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this client address, or the clients in this network (`192.0.2.0/24`, `2001:db8::/32`).
    #[arg(long, value_name = "ADDR|CIDR", value_parser = parse_ip_filter)]
    pub ip: Option<Net>,
    /// Only paths starting with this.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Only this status (404) or class (5xx).
    #[arg(long)]
    pub status: Option<String>,
    /// Only blocked requests.
    #[arg(long)]
    pub blocked: bool,
    /// At most this many records, the newest (`all` for every one).
    #[arg(long, value_name = "N|all", default_value = DEFAULT_LIMIT, value_parser = parse_limit)]
    pub limit: Limit,
    /// One JSON object per line (the footer saying more records exist goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Keep printing new records as they arrive.
    #[arg(long, short)]
    pub follow: bool,
}

/// `--limit`: a number of records, or `None` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<usize>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(Limit(None));
    }
    match text.parse::<usize>() {
        Ok(0) => Err("0 would show nothing: give a number of records, or `all`".into()),
        Ok(n) => Ok(Limit(Some(n))),
        Err(_) => Err(format!("{text:?} is not a number of records (or `all`)")),
    }
}

/// An address or a network; an IPv4-mapped IPv6 one is the IPv4 it carries, as clients are
/// logged.
fn parse_ip_filter(text: &str) -> Result<Net, String> {
    text.parse::<Net>()
        .map(Net::unmapped)
        .map_err(|e| e.to_string())
}

/// The `--since` / `--until` range in ms since the epoch; an empty range (since not before
/// until) is an error saying so, rather than an empty answer.
fn time_range(
    since: Option<&str>,
    until: Option<&str>,
    now_ms: u64,
) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let since_ms = since
        .map(|t| parse_utc(t, now_ms))
        .transpose()
        .context("--since")?;
    let until_ms = until
        .map(|t| parse_utc(t, now_ms))
        .transpose()
        .context("--until")?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && s >= u
    {
        bail!(
            "--since {} ({}) is not before --until {} ({}): no record can be in that range \
             (were they swapped?)",
            since.unwrap_or_default(),
            format_utc(s),
            until.unwrap_or_default(),
            format_utc(u)
        );
    }
    Ok((since_ms, until_ms))
}

/// `n` with a comma between each group of three digits: `2,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The line after a page saying older records match too, if they do.
fn footer(page: &LogPage) -> Option<String> {
    (page.more > 0).then(|| {
        let n = thousands(page.more);
        let count = if page.more_at_least {
            format!("more than {n}")
        } else {
            n
        };
        format!(
            "… {count} more (older); show them with --limit N or --limit all, or narrow with \
             --since"
        )
    })
}

/// Runs `guard logs`.
pub fn run(args: LogsArgs, socket: &Path) -> anyhow::Result<()> {
    let (since_ms, until_ms) = time_range(args.since.as_deref(), args.until.as_deref(), now_ms())?;
    if let Some(s) = &args.status {
        s.parse::<StatusFilter>().context("--status")?;
    }
    let ns = |ms: u64| ms.saturating_mul(1_000_000);
    let mut req = LogsRequest {
        since_ns: since_ms.map(ns),
        until_ns: until_ms.map(ns),
        ip: args.ip,
        path_prefix: args.path_prefix,
        status: args.status,
        blocked: args.blocked,
        limit: args.limit.0,
    };
    let page: LogPage = control::call(socket, &Request::LogPage(req.clone()))?;
    let table = if args.follow {
        Table::follow(&page.records)
    } else {
        Table::fit(&page.records)
    };
    if args.json {
        for r in &page.records {
            println!("{}", r.to_json_line());
        }
    } else {
        print!("{}{}", table.header(), table.rows(&page.records));
        if page.records.is_empty() && !args.follow {
            println!("(none)");
        }
    }
    if let Some(f) = footer(&page) {
        if args.json {
            eprintln!("{f}");
        } else {
            println!("{f}");
        }
    }
    if !args.follow {
        return Ok(());
    }
    let mut last = page.records.iter().map(|r| r.time).max();
    req.limit = None;
    loop {
        if let Some(t) = last {
            req.since_ns = Some(t.as_nanos() as u64 + 1);
        }
        std::thread::sleep(Duration::from_millis(500));
        let records: Vec<LogRecord> = control::call(socket, &Request::Logs(req.clone()))?;
        if args.json {
            for r in &records {
                println!("{}", r.to_json_line());
            }
        } else {
            print!("{}", table.rows(&records));
        }
        last = records.iter().map(|r| r.time).max().or(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ranges_take_times_and_refuse_inverted_ones() {
        let now = 1_795_000_000_000; // 2026-11-18T11:06:40Z
        assert_eq!(
            time_range(Some("2026-11-18"), Some("10m"), now).unwrap(),
            (Some(now - 40_000_000), Some(now - 600_000))
        );
        assert_eq!(
            time_range(Some("2026-11-18T12:00:00+01:00"), None, now).unwrap(),
            (Some(now - 6 * 60_000 - 40_000), None)
        );
        assert_eq!(time_range(None, None, now).unwrap(), (None, None));
        let err = time_range(Some("1h"), Some("2h"), now)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--since 1h (2026-11-18T10:06:40Z) is not before --until 2h (2026-11-18T09:06:40Z): \
             no record can be in that range (were they swapped?)"
        );
        let err = format!(
            "{:#}",
            time_range(Some("yesterday"), None, now).unwrap_err()
        );
        assert!(
            err.starts_with("--since: invalid time \"yesterday\""),
            "{err}"
        );
    }

    #[test]
    fn limits_and_networks_on_the_command_line() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let cli =
                crate::cli::Cli::try_parse_from(["guard", "logs"].iter().chain(args).copied())?;
            match cli.command {
                crate::cli::Command::Logs(a) => Ok::<_, clap::Error>(a),
                other => panic!("{other:?}"),
            }
        };
        let a = parse(&[]).unwrap();
        assert_eq!((a.limit, a.ip), (Limit(Some(100)), None));
        let a = parse(&["--limit", "all", "--ip", "10.1.2.0/24"]).unwrap();
        assert_eq!(a.limit, Limit(None));
        assert_eq!(a.ip.map(|n| n.to_string()).as_deref(), Some("10.1.2.0/24"));
        let a = parse(&["--ip", "::ffff:10.1.2.3"]).unwrap();
        assert_eq!(a.ip.map(|n| n.to_string()).as_deref(), Some("10.1.2.3"));
        let a = parse(&["--ip", "2001:db8::/32", "--limit", "5"]).unwrap();
        assert_eq!(a.limit, Limit(Some(5)));
        assert_eq!(
            a.ip.map(|n| n.to_string()).as_deref(),
            Some("2001:db8::/32")
        );
        for bad in [
            &["--limit", "0"][..],
            &["--limit", "x"],
            &["--ip", "10.1.2.0/33"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_footer_says_how_many_more_and_how_to_see_them() {
        let page = |more, more_at_least| LogPage {
            records: Vec::new(),
            more,
            more_at_least,
        };
        assert_eq!(footer(&page(0, false)), None);
        assert_eq!(
            footer(&page(2345, false)).unwrap(),
            "… 2,345 more (older); show them with --limit N or --limit all, or narrow with --since"
        );
        assert!(
            footer(&page(1_000_000, true))
                .unwrap()
                .starts_with("… more than 1,000,000 more")
        );
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
