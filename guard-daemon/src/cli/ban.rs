//! `guard ban`: add, lift, list and import bans, and the selection flags `ls` and `rm` share.

use std::io::Read;
use std::net::IpAddr;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{parse_target, print_table, ttl_secs};
use crate::bans::{BanFilter, BanSort, BanView, Origin};
use crate::clock::{format_utc, now_ms};
use crate::control::{self, BanAdded, ImportEntry, Imported, Removed, Replaced, Request};
use crate::net::Net;

#[derive(Debug, Args)]
pub struct BanLsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// List user bans instead of address bans.
    #[arg(long, conflicts_with_all = ["ip", "range", "origin", "reason", "sort", "limit"])]
    pub user: bool,
    #[command(flatten)]
    pub select: BanSelect,
    /// Order of the list.
    #[arg(long, value_enum, default_value_t = BanSort::Addr)]
    pub sort: BanSort,
    /// Show at most N bans (after sorting).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Which bans `ban ls` shows and `ban rm` lifts.
#[derive(Debug, Args)]
pub struct BanSelect {
    /// Bans covering this address (its own and every CIDR containing it).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<IpAddr>,
    /// Bans inside this network.
    #[arg(long, value_name = "CIDR")]
    pub range: Option<String>,
    /// Bans of this origin: cli, import, rate-limit, engine, crowdsec.
    #[arg(long, value_parser = str::parse::<Origin>)]
    pub origin: Option<Origin>,
    /// Bans whose reason contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl BanSelect {
    fn is_empty(&self) -> bool {
        self.ip.is_none() && self.range.is_none() && self.origin.is_none() && self.reason.is_none()
    }

    pub(crate) fn filter(self) -> anyhow::Result<BanFilter> {
        Ok(BanFilter {
            ip: self.ip.map(|ip| Net::host(ip).unmapped().addr()),
            range: self
                .range
                .as_deref()
                .map(parse_target)
                .transpose()
                .context("--range")?,
            origin: self.origin,
            reason: self.reason,
            ..BanFilter::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct BanRmArgs {
    /// The banned address or CIDR (exactly as banned); or, instead, filters selecting bans.
    pub target: Option<String>,
    /// Lift the ban of this user id instead.
    #[arg(long, value_name = "ID", conflicts_with_all = ["target", "ip", "range", "origin", "reason"])]
    pub user: Option<String>,
    #[command(flatten)]
    pub select: BanSelect,
    /// Keep the engine's view of the client: the lifted ban still counts as an offence (the
    /// next one is longer) and its recent requests still count. By default the client starts
    /// afresh, as after a false positive.
    #[arg(long)]
    pub keep_history: bool,
}

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// Ban an address or CIDR block, or a user (`--user ID`).
    Add {
        #[arg(required_unless_present = "user")]
        target: Option<String>,
        /// Ban this user id (a verified JWT `sub` or trusted user header) instead of an
        /// address: the inline proxy and forward-auth answer its requests 403.
        #[arg(long, value_name = "ID", conflicts_with_all = ["target", "force"])]
        user: Option<String>,
        /// Duration (e.g. 30m, 4h, 7d); 0 = permanent. Default: `bans.default_ttl`.
        #[arg(long)]
        ttl: Option<String>,
        /// Why (shown in `ban ls`).
        #[arg(long)]
        reason: Option<String>,
        /// Ban even if the target overlaps the allowlist (the allowlist still wins in XDP), is
        /// wider than /8 (IPv4) or /32 (IPv6), covers this SSH session's client, or contains a
        /// protected address (which stays reachable). A protected address itself, or a range
        /// inside a protected one, is never banned.
        #[arg(long)]
        force: bool,
        /// An already banned target keeps the later of its two ends (its current one, or the
        /// one `--ttl` asks for) instead of taking the new one.
        #[arg(long, conflicts_with = "user")]
        extend: bool,
    },
    /// Lift a ban, or every ban the filters select.
    Rm(BanRmArgs),
    /// List bans with their drop counters.
    Ls(BanLsArgs),
    /// Ban many: one address/CIDR a line, or CSV `value,duration,reason`; FILE or - for stdin.
    Import {
        file: String,
        /// Ban entries that overlap the allowlist too.
        #[arg(long)]
        force: bool,
    },
}

pub(super) fn ban(cmd: BanCommand, socket: &std::path::Path) -> anyhow::Result<()> {
    match cmd {
        BanCommand::Add {
            user: Some(id),
            ttl,
            reason,
            ..
        } => super::users::add(id, ttl.as_deref(), reason, socket)?,
        BanCommand::Add {
            target,
            ttl,
            reason,
            force,
            extend,
            user: None,
        } => {
            let Some(text) = target else {
                bail!("name the address or CIDR to ban, or --user ID");
            };
            let target = parse_target(&text)?;
            if !force {
                check_host_bits(&text, &target)?;
                check_add(
                    &target,
                    ssh_client(std::env::var("SSH_CLIENT").ok().as_deref()),
                )?;
            }
            let req = Request::BanAdd {
                target,
                ttl_secs: ttl_secs(ttl.as_deref())?,
                reason,
                force,
                extend,
            };
            let added: Box<BanAdded> = control::call(socket, &req)?;
            println!(
                "banned {} until {}",
                added.ban.addr,
                until(added.ban.expires_at)
            );
            if let Some(old) = &added.replaced {
                println!("{}", describe_replaced(old, &added.ban, extend));
            }
        }
        BanCommand::Rm(BanRmArgs { user: Some(id), .. }) => super::users::rm(id, socket)?,
        BanCommand::Rm(args) => ban_rm(args, socket)?,
        BanCommand::Ls(f) if f.user => super::users::ls(f.json, socket)?,
        BanCommand::Ls(f) => {
            let filter = BanFilter {
                sort: f.sort,
                limit: f.limit,
                ..f.select.filter()?
            };
            let bans: Vec<BanView> = control::call(socket, &Request::BanLs { filter })?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&bans)?);
            } else {
                print_bans(&bans);
            }
        }
        BanCommand::Import { file, force } => import(&file, force, socket)?,
    }
    Ok(())
}

/// `guard ban import`: sends the entries in pieces under the socket's limit and sums the
/// answers; output as for one request. When there is more than one piece, a line on stderr
/// says what each piece saved as soon as the daemon answers it (see [`piece_saved`]): the daemon
/// answers a piece only once sled has flushed it, so every ban such a line counts survives a
/// crash of the daemon, even one in the middle of the import.
fn import(file: &str, force: bool, socket: &std::path::Path) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let entries = parse_import(&text)?;
    let n = entries.len();
    // The socket takes requests of 1 MiB at most: a large import goes in pieces, each
    // saved by the daemon before the next is sent.
    let chunks = import_chunks(entries, IMPORT_CHUNK_BYTES)?;
    let pieces = chunks.len();
    let mut banned = 0;
    // What the daemon refused, by piece: the other pieces are still sent (a piece the
    // store could not record is still enforced, as a whole import would be).
    let (mut failures, mut first) = (Vec::new(), 1);
    for (i, entries) in chunks.into_iter().enumerate() {
        let sent = entries.len();
        match control::call::<Imported>(socket, &Request::BanImport { entries, force }) {
            Ok(imported) => {
                banned += imported.banned;
                for r in &imported.refused {
                    eprintln!("refused: {r}");
                }
                if pieces > 1 {
                    eprintln!(
                        "{}",
                        piece_saved(
                            PiecePlace {
                                piece: i + 1,
                                pieces,
                                first,
                                sent,
                            },
                            imported.banned,
                            banned,
                            n
                        )
                    );
                }
            }
            Err(control::ControlError::Daemon(message)) if pieces == 1 => bail!(message),
            Err(control::ControlError::Daemon(message)) => failures.push(format!(
                "entries {first} to {}: {message}",
                first + sent - 1
            )),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{banned} of {n} bans were imported (and saved) before this error"
                )));
            }
        }
        first += sent;
    }
    if !failures.is_empty() {
        bail!(
            "the import went in {pieces} pieces (the control socket takes 1 MiB at most); \
             {} failed: {}; the other pieces saved {banned} of {n} bans",
            failures.len(),
            failures.join("; "),
        );
    }
    println!("imported {banned} of {n} bans");
    Ok(())
}

/// Where a piece of an import sits: its number (from 1) of how many, and its entries (the
/// first one's number in the input, from 1, and how many).
#[derive(Debug, Clone, Copy)]
pub struct PiecePlace {
    pub piece: usize,
    pub pieces: usize,
    pub first: usize,
    pub sent: usize,
}

/// The progress line for a piece the daemon answered: `piece 2/6 saved: 16667 of entries
/// 16668-33334 (33334 of 100000 so far)` — `saved` bans of this piece's entries are on disk
/// (the rest were refused, each on a `refused:` line), `total` of the input's `n` so far.
#[must_use]
pub fn piece_saved(at: PiecePlace, saved: usize, total: usize, n: usize) -> String {
    format!(
        "piece {}/{} saved: {saved} of entries {}-{} ({total} of {n} so far)",
        at.piece,
        at.pieces,
        at.first,
        (at.first + at.sent).saturating_sub(1)
    )
}

/// An end time as `ban add` prints it.
fn until(expires_at: Option<u64>) -> String {
    expires_at.map_or_else(|| "forever".into(), format_utc)
}

/// What a `ban add` changed in the ban it replaced: its end and its reason, each old and new.
#[must_use]
pub fn describe_replaced(old: &Replaced, now: &BanView, extend: bool) -> String {
    let mut changes = Vec::new();
    // Within a second is the same end (`--extend` recomputes it from the clock).
    let same_end = match (old.expires_at, now.expires_at) {
        (Some(a), Some(b)) => a.abs_diff(b) < 1000,
        (a, b) => a == b,
    };
    if same_end {
        changes.push(format!("end unchanged ({})", until(now.expires_at)));
    } else {
        let shorter = match (old.expires_at, now.expires_at) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b < a,
            _ => false,
        };
        changes.push(format!(
            "end {} -> {}{}",
            until(old.expires_at),
            until(now.expires_at),
            if shorter && !extend {
                " (shorter: --extend keeps the later end)"
            } else {
                ""
            }
        ));
    }
    if old.reason == now.reason {
        changes.push(format!("reason unchanged ({:?})", now.reason));
    } else {
        changes.push(format!("reason {:?} -> {:?}", old.reason, now.reason));
    }
    format!(
        "it was already banned ({} ban); replaced: {}",
        old.origin,
        changes.join("; ")
    )
}

/// Why `guard ban add` refuses a target before asking the daemon (each lifted by `--force`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddRefusal {
    #[error(
        "refusing to ban {target}: it is every address of the family; use --force if you really mean it"
    )]
    Everything { target: Net },
    #[error(
        "refusing to ban {target}: a prefix shorter than /{min} bans a large share of the internet; use --force if you really mean it"
    )]
    TooWide { target: Net, min: u8 },
    #[error(
        "refusing to ban {target}: it covers {client}, the client of this SSH session (SSH_CLIENT), which would lock you out; use --force if you really mean it"
    )]
    OwnSession { target: Net, client: IpAddr },
    #[error(
        "refusing to ban {given}: its address has host bits set, so it means the whole network {network}; write {network} if you mean that network, or use --force"
    )]
    HostBits { given: String, network: Net },
}

/// Refuses a CIDR block written with host bits (`10.88.0.5/24`), which would ban the whole
/// network it lies in (`10.88.0.0/24`) without saying so; `target` is `text` parsed.
///
/// # Errors
/// [`AddRefusal::HostBits`] naming the network the text means.
pub fn check_host_bits(text: &str, target: &Net) -> Result<(), AddRefusal> {
    let Some((addr, _)) = text.trim().split_once('/') else {
        return Ok(());
    };
    let given = addr
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| Net::host(ip).unmapped().addr());
    if given.is_some_and(|ip| ip != target.addr()) {
        return Err(AddRefusal::HostBits {
            given: text.trim().to_owned(),
            network: *target,
        });
    }
    Ok(())
}

/// Shortest prefixes `guard ban add` takes without `--force`.
pub const MIN_PREFIX_V4: u8 = 8;
/// See [`MIN_PREFIX_V4`].
pub const MIN_PREFIX_V6: u8 = 32;

/// The client address of an `SSH_CLIENT` value (`ADDR PORT PORT`).
#[must_use]
pub fn ssh_client(value: Option<&str>) -> Option<IpAddr> {
    value?.split_whitespace().next()?.parse().ok()
}

/// The CLI's own refusals of `guard ban add` (the daemon adds the protected list's).
///
/// # Errors
/// [`AddRefusal`] naming the reason: `0.0.0.0/0` or `::/0`, a prefix shorter than /8 (IPv4)
/// or /32 (IPv6), or a target covering the caller's SSH client.
pub fn check_add(target: &Net, ssh_client: Option<IpAddr>) -> Result<(), AddRefusal> {
    let min = match target.addr() {
        IpAddr::V4(_) => MIN_PREFIX_V4,
        IpAddr::V6(_) => MIN_PREFIX_V6,
    };
    if target.prefix() == 0 {
        return Err(AddRefusal::Everything { target: *target });
    }
    if target.prefix() < min {
        return Err(AddRefusal::TooWide {
            target: *target,
            min,
        });
    }
    if let Some(client) = ssh_client.filter(|c| covers(target, *c)) {
        return Err(AddRefusal::OwnSession {
            target: *target,
            client,
        });
    }
    Ok(())
}

/// Whether `target` covers `ip`, an IPv4-mapped IPv6 address counting as its IPv4 one.
fn covers(target: &Net, ip: IpAddr) -> bool {
    let plain = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    target.contains(ip) || target.contains(plain)
}

/// `guard ban rm`: one ban by its target, or every ban the filters select.
fn ban_rm(args: BanRmArgs, socket: &std::path::Path) -> anyhow::Result<()> {
    match (args.target, !args.select.is_empty()) {
        (Some(target), false) => {
            let target = parse_target(&target)?;
            let _: Box<BanView> = control::call(
                socket,
                &Request::BanRm {
                    target,
                    keep_history: args.keep_history,
                },
            )?;
            println!("unbanned {target}");
        }
        (None, true) => {
            let filter = args.select.filter()?;
            let lifted: Removed = control::call(
                socket,
                &Request::BanRmMatching {
                    filter,
                    keep_history: args.keep_history,
                },
            )?;
            println!("unbanned {} bans", lifted.removed);
        }
        (Some(_), true) => bail!(
            "give either an address/CIDR or filters (--ip, --range, --origin, --reason), not both"
        ),
        (None, false) => bail!(
            "name the ban to lift (an address or CIDR) or select bans with --ip, --range, --origin or --reason"
        ),
    }
    Ok(())
}

/// The largest `ban import` request the CLI sends: under the socket's limit
/// (`control::MAX_REQUEST_BYTES`), with room for the request's own fields.
const IMPORT_CHUNK_BYTES: usize = control::MAX_REQUEST_BYTES - 4096;

/// Splits `entries` into pieces whose `ban import` request is at most `max_bytes` long, in
/// order. An entry too large to be sent alone is an error naming it.
pub fn import_chunks(
    entries: Vec<ImportEntry>,
    max_bytes: usize,
) -> anyhow::Result<Vec<Vec<ImportEntry>>> {
    // `{"op":"ban_import","entries":[` … `],"force":false}` and the newline.
    const FRAME: usize = 64;
    let mut chunks = Vec::new();
    let (mut chunk, mut bytes) = (Vec::new(), FRAME);
    for entry in entries {
        // Plain data: encoding cannot fail; the comma between entries is counted.
        let size = serde_json::to_vec(&entry).map_or(0, |v| v.len()) + 1;
        if FRAME + size > max_bytes {
            bail!(
                "the import entry for {} is {size} bytes, more than the control socket takes \
                 ({max_bytes}); shorten its reason",
                entry.target
            );
        }
        if bytes + size > max_bytes {
            chunks.push(std::mem::take(&mut chunk));
            bytes = FRAME;
        }
        bytes += size;
        chunk.push(entry);
    }
    if !chunk.is_empty() || chunks.is_empty() {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// Parses `guard ban import` input: `ADDR[/LEN]` or `ADDR[/LEN],DURATION,REASON` a line;
/// blank lines and `#` comments are skipped. Errors name the line.
pub fn parse_import(text: &str) -> anyhow::Result<Vec<ImportEntry>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ',').map(str::trim);
        let target = fields.next().unwrap_or_default();
        let target: Net = match target.parse() {
            Ok(t) => t,
            Err(e) if i == 0 && !target.contains(['.', ':']) => {
                let _ = e;
                continue; // a CSV header line
            }
            Err(e) => bail!("line {}: {e}", i + 1),
        };
        let ttl = match fields.next().filter(|s| !s.is_empty()) {
            Some(d) => Some(
                ttl_secs(Some(d))
                    .with_context(|| format!("line {}", i + 1))?
                    .unwrap_or(0),
            ),
            None => None,
        };
        let reason = fields
            .next()
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_matches('"').to_owned());
        out.push(ImportEntry {
            target,
            ttl_secs: ttl,
            reason,
        });
    }
    Ok(out)
}

fn print_bans(bans: &[BanView]) {
    let now = now_ms();
    let rows: Vec<Vec<String>> = bans
        .iter()
        .map(|b| {
            vec![
                b.addr.to_string(),
                b.reason.clone(),
                b.origin.to_string(),
                format_utc(b.created_at),
                b.expires_at.map_or_else(
                    || "never".into(),
                    |t| {
                        format!(
                            "{} (in {})",
                            format_utc(t),
                            crate::clock::format_duration(std::time::Duration::from_millis(
                                t.saturating_sub(now)
                            ))
                        )
                    },
                ),
                b.packets.to_string(),
                b.bytes.to_string(),
                b.last_hit.map_or_else(|| "-".into(), format_utc),
            ]
        })
        .collect();
    print_table(
        &[
            "ADDRESS", "REASON", "ORIGIN", "CREATED", "EXPIRES", "PACKETS", "BYTES", "LAST HIT",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 entries (about 4.5 MB of JSON, over the socket's 1 MiB) go in pieces that each
    /// fit, in order, none lost.
    #[test]
    fn a_large_import_is_sent_in_pieces_under_the_limit() {
        let entries: Vec<ImportEntry> = (0..100_000u32)
            .map(|i| ImportEntry {
                target: Net::host(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()),
                ttl_secs: (i % 2 == 0).then_some(3600),
                reason: (i % 3 == 0).then(|| format!("scanner {i}")),
            })
            .collect();
        let whole = serde_json::to_vec(&Request::BanImport {
            entries: entries.clone(),
            force: true,
        })
        .unwrap()
        .len();
        assert!(whole > control::MAX_REQUEST_BYTES, "{whole}");
        let chunks = import_chunks(entries.clone(), IMPORT_CHUNK_BYTES).unwrap();
        assert!(chunks.len() >= 4, "{}", chunks.len());
        for c in &chunks {
            let line = serde_json::to_vec(&Request::BanImport {
                entries: c.clone(),
                force: true,
            })
            .unwrap();
            assert!(line.len() < control::MAX_REQUEST_BYTES, "{}", line.len());
        }
        assert_eq!(chunks.concat(), entries);
        // Nothing to send is one empty request (the daemon answers 0 of 0).
        assert_eq!(import_chunks(Vec::new(), 1000).unwrap().len(), 1);
        // An entry that cannot fit alone is named.
        let huge = ImportEntry {
            target: net("192.0.2.9"),
            ttl_secs: None,
            reason: Some("x".repeat(2000)),
        };
        let e = import_chunks(vec![huge], 1000).unwrap_err().to_string();
        assert!(e.contains("192.0.2.9"), "{e}");
    }

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_piece_saved_names_its_entries_and_the_total_so_far() {
        let at = PiecePlace {
            piece: 2,
            pieces: 6,
            first: 16_668,
            sent: 16_667,
        };
        assert_eq!(
            piece_saved(at, 16_667, 33_334, 100_000),
            "piece 2/6 saved: 16667 of entries 16668-33334 (33334 of 100000 so far)"
        );
    }

    #[test]
    fn everything_and_too_wide_prefixes_are_refused() {
        for t in ["0.0.0.0/0", "::/0"] {
            let e = check_add(&net(t), None).unwrap_err();
            assert!(matches!(e, AddRefusal::Everything { .. }), "{t}");
            assert!(e.to_string().contains("--force"), "{e}");
        }
        for (t, min) in [("10.0.0.0/7", 8), ("128.0.0.0/1", 8), ("2001:db8::/31", 32)] {
            let e = check_add(&net(t), None).unwrap_err();
            assert_eq!(
                e,
                AddRefusal::TooWide {
                    target: net(t),
                    min
                }
            );
            assert!(e.to_string().contains(&format!("/{min}")), "{e}");
        }
        for t in ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "2001:db8::1"] {
            assert_eq!(check_add(&net(t), None), Ok(()), "{t}");
        }
    }

    #[test]
    fn the_callers_own_ssh_session_is_refused() {
        let me = ssh_client(Some("192.0.2.10 51234 22"));
        assert_eq!(me, Some("192.0.2.10".parse().unwrap()));
        for t in ["192.0.2.10", "192.0.2.0/24"] {
            let e = check_add(&net(t), me).unwrap_err();
            assert!(matches!(e, AddRefusal::OwnSession { .. }), "{t}");
            let msg = e.to_string();
            assert!(
                msg.contains("SSH") && msg.contains("192.0.2.10") && msg.contains("--force"),
                "{msg}"
            );
        }
        assert_eq!(check_add(&net("192.0.2.11"), me), Ok(()));
        // An IPv4 session seen as an IPv4-mapped address is the same client.
        let mapped = ssh_client(Some("::ffff:192.0.2.10 51234 22"));
        assert!(check_add(&net("192.0.2.10"), mapped).is_err());
        let v6 = ssh_client(Some("2001:db8::9 40000 22"));
        assert!(check_add(&net("2001:db8::/64"), v6).is_err());
        assert_eq!(ssh_client(Some("")), None);
        assert_eq!(ssh_client(Some("garbage")), None);
        assert_eq!(ssh_client(None), None);
    }
}
