//! The command line: argument definitions and dispatch to each subcommand. Daemon commands
//! talk to `guard run` over the control socket; output is a human table, or JSON with `--json`.
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::clock::{format_utc, parse_duration};
use crate::config::{Config, DEFAULT_SOCKET};
use crate::control::{self, Request, Status};
use crate::net::Net;
use crate::store::AllowRecord;

mod ban;
mod docs;
mod logs;
mod quota;
mod stats;
mod users;
pub use ban::{BanCommand, BanLsArgs, BanRmArgs, BanSelect, parse_import};
pub use logs::LogsArgs;

/// guard — XDP bans and rate limits, HTTP behaviour scoring, one binary.
#[derive(Debug, Parser)]
#[command(name = "guard", version, about)]
pub struct Cli {
    /// Control socket of the daemon (default: the config's, else /run/guard/guard.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root).
    Run(RunArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage bans.
    #[command(subcommand)]
    Ban(BanCommand),
    /// Manage the allowlist (never banned, never rate-limited).
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Packet counters of the XDP program and the daemon.
    Stats(JsonFlag),
    /// Is the daemon running, on which interfaces, with what.
    Status(JsonFlag),
    /// Read the configuration file again and apply what can change at run time (the
    /// `[engine]` and `[validator]` sections); bans and connections stay. Same as SIGHUP.
    Reload(JsonFlag),
    /// Switch the engine between `shadow` and `enforce` at run time; kept across restarts until
    /// the file's `engine.mode` changes.
    Mode {
        #[arg(value_parser = ["shadow", "enforce"])]
        mode: String,
    },
    /// Query the request log.
    Logs(LogsArgs),
    /// The HTTP tap.
    #[command(subcommand)]
    Tap(TapCommand),
    /// Run the request validator on one request or a file of cases (no daemon needed).
    Inspect(crate::inspect::InspectArgs),
    /// The plan quotas' plan table (which user is on which plan).
    #[command(subcommand)]
    Plan(quota::PlanCommand),
    /// The plan quotas' counters: show or reset a user's (or an address's).
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// AI triage set-up.
    Ai {
        #[command(subcommand)]
        command: crate::ai::cli::AiCommand,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page guard(1) (roff) on stdout, or write every command's page.
    Man {
        /// Write guard.1 and a page for each command (guard-ban.1, guard-ban-add.1, ...) into
        /// this directory instead, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TapCommand {
    /// Show the protected HTTP ports, or replace them (takes effect at once).
    Ports { ports: Vec<u16> },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML). Without it, the documented defaults apply.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to guard (repeatable); overrides `xdp.interfaces`.
    #[arg(long = "interface", short = 'i', value_name = "IF")]
    pub interfaces: Vec<String>,
    /// State directory (sled database); overrides `daemon.state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory for pinned maps and links; overrides `xdp.pin_dir`.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Maps pinned with another layout (an older or newer guard) are not reused: unpin them and
    /// rebuild the maps from the store. Without it guard refuses to start on such pins.
    #[arg(long)]
    pub replace_pins: bool,
    /// Protected HTTP port to capture (repeatable); overrides `tap.http_ports`.
    #[arg(long = "http-port", value_name = "PORT")]
    pub http_ports: Vec<u16>,
    /// What the eBPF programs log into guard's log (off, error, warn, info, debug, trace);
    /// overrides `xdp.ebpf_log`. Off costs nothing: the verifier removes the log code.
    #[arg(long, value_name = "LEVEL")]
    pub ebpf_log: Option<crate::xdp::EbpfLogLevel>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file; errors name the key and the line.
    Check { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AllowCommand {
    /// Allowlist an address or CIDR block.
    Add {
        target: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove an allowlist entry.
    Rm { target: String },
    /// List the allowlist.
    Ls(JsonFlag),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.clone();
    match cli.command {
        Command::Run(args) => run_daemon(args, socket),
        Command::Config(ConfigCommand::Check { file }) => {
            let config = Config::load(&file)?;
            println!("{}: ok", file.display());
            let _ = config;
            Ok(())
        }
        Command::Ban(cmd) => ban::ban(cmd, &socket_path(socket)),
        Command::Allow(cmd) => allow(cmd, &socket_path(socket)),
        Command::Stats(f) => stats::run(f.json, &socket_path(socket)),
        Command::Status(f) => status(f.json, &socket_path(socket)),
        Command::Reload(f) => reload(f.json, &socket_path(socket)),
        Command::Mode { mode } => {
            let set: control::proto::ModeSet =
                control::call(&socket_path(socket), &Request::Mode { mode })?;
            println!(
                "engine mode {} (was {}; engine.mode in the file: {}); kept until engine.mode \
                 changes in the file",
                set.mode, set.previous, set.config_mode
            );
            Ok(())
        }
        Command::Logs(args) => logs::run(args, &socket_path(socket)),
        Command::Tap(TapCommand::Ports { ports }) => {
            let ports = (!ports.is_empty()).then_some(ports);
            let now: Vec<u16> = control::call(&socket_path(socket), &Request::TapPorts { ports })?;
            let now: Vec<String> = now.iter().map(u16::to_string).collect();
            println!("HTTP tap ports: [{}]", now.join(","));
            Ok(())
        }
        Command::Plan(cmd) => quota::plan(cmd, &socket_path(socket)),
        Command::Quota(cmd) => quota::quota(cmd, &socket_path(socket)),
        Command::Ai { command } => crate::ai::cli::run(command),
        Command::Inspect(args) => crate::inspect::run(&args),
        Command::Completions { shell } => {
            docs::completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Man { dir: None } => Ok(docs::man(&mut std::io::stdout().lock())?),
        Command::Man { dir: Some(dir) } => docs::man_pages(&dir).map_err(|e| {
            anyhow::anyhow!("cannot write the manual pages into {}: {e}", dir.display())
        }),
    }
}

fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GUARD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn run_daemon(args: RunArgs, socket: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.interfaces.is_empty() {
        config.xdp.interfaces = args.interfaces;
    }
    if let Some(s) = socket {
        config.daemon.socket = s;
    }
    if let Some(d) = args.state_dir {
        config.daemon.state_dir = d;
    }
    if let Some(d) = args.pin_dir {
        config.xdp.pin_dir = d;
    }
    config.xdp.replace_pins = args.replace_pins;
    if !args.http_ports.is_empty() {
        config.tap.http_ports = args.http_ports;
    }
    if let Some(level) = args.ebpf_log {
        config.xdp.ebpf_log = level;
    }
    config.validate(args.config.as_deref().unwrap_or("command line".as_ref()))?;
    crate::daemon::run(config, args.config)
}

/// An address or CIDR block from the command line; an IPv4-mapped IPv6 one is written as the
/// IPv4 it carries (`::ffff:10.0.0.5` is `10.0.0.5`), the form IPv4 traffic is matched against.
fn parse_target(text: &str) -> anyhow::Result<Net> {
    Ok(text.parse::<Net>()?.unmapped())
}

fn ttl_secs(text: Option<&str>) -> anyhow::Result<Option<u64>> {
    text.map(|t| {
        if t == "never" || t == "permanent" {
            Ok(0)
        } else {
            parse_duration(t).map(|d| d.as_secs())
        }
    })
    .transpose()
    .map_err(Into::into)
}

fn allow(cmd: AllowCommand, socket: &std::path::Path) -> anyhow::Result<()> {
    match cmd {
        AllowCommand::Add { target, reason } => {
            let added: control::AllowAdded = control::call(
                socket,
                &Request::AllowAdd {
                    target: parse_target(&target)?,
                    reason,
                },
            )?;
            match added.replaced_reason {
                Some(old) => println!(
                    "allowlisted {} (it was already; its reason {old:?} is replaced by {:?})",
                    added.entry.target, added.entry.reason
                ),
                None => println!("allowlisted {}", added.entry.target),
            }
        }
        AllowCommand::Rm { target } => {
            let removed: AllowRecord = control::call(
                socket,
                &Request::AllowRm {
                    target: parse_target(&target)?,
                },
            )?;
            println!("removed {} from the allowlist", removed.target);
        }
        AllowCommand::Ls(f) => {
            let rows: Vec<AllowRecord> = control::call(socket, &Request::AllowLs)?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.target.to_string(),
                            r.reason.clone(),
                            format_utc(r.created_at),
                        ]
                    })
                    .collect();
                print_table(&["ADDRESS", "REASON", "CREATED"], &table);
            }
        }
    }
    Ok(())
}

/// The `mode` line of `guard status`: the engine's mode, and the inline mode's when it is on.
fn describe_mode(engine: &str, inline: Option<&str>) -> String {
    let mut s = match engine {
        "shadow" => {
            "shadow: bans are decided and logged (\"would ban\"), never enforced".to_owned()
        }
        "enforce" => "enforce: bans are enforced in XDP".to_owned(),
        other => other.to_owned(),
    };
    match inline {
        Some("shadow") => s.push_str("; inline shadow: every request is passed, refusals logged"),
        Some("enforce") => s.push_str("; inline enforce: refused requests are answered"),
        Some(other) => {
            let _ = write!(s, "; inline {other}");
        }
        None => {}
    }
    s
}

/// Prints left-aligned columns separated by two spaces.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

fn reload(json: bool, socket: &std::path::Path) -> anyhow::Result<()> {
    let r: control::proto::Reloaded = control::call(socket, &Request::Reload)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("reloaded {}", r.file.display());
    if r.applied.is_empty() && r.need_restart.is_empty() {
        println!("  no key changed");
    }
    for k in &r.applied {
        println!("  applied       {k}");
    }
    for k in &r.need_restart {
        println!("  needs restart {k} (the old value stays in effect until guard restarts)");
    }
    if r.override_ended {
        println!("  engine.mode changed in the file: the mode set by `guard mode` ends");
    }
    println!("  mode {}", describe_mode(&r.mode, None));
    Ok(())
}

fn status(json: bool, socket: &std::path::Path) -> anyhow::Result<()> {
    let data: Box<Status> = control::call(socket, &Request::Status)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    println!(
        "guard {} running (pid {}, up {}s)",
        data.version, data.pid, data.uptime_secs
    );
    println!(
        "  mode {}{}",
        describe_mode(&data.mode, data.inline_mode.as_deref()),
        if data.mode_set_by_command {
            " (set by `guard mode`)"
        } else {
            ""
        }
    );
    for i in &data.interfaces {
        println!("  interface {} ({} XDP)", i.name, i.mode);
    }
    println!(
        "  bans {}  user bans {}  allowlist {}  rate limit {} pps",
        data.bans, data.user_bans, data.allowlist, data.rate_limit_pps
    );
    println!(
        "  state {}  pins {}",
        data.state_dir.display(),
        data.pin_dir.display()
    );
    if !data.maps.is_empty() {
        println!("  XDP maps (entries / capacity):");
    }
    for m in &data.maps {
        let pct = u64::from(m.entries) * 100 / u64::from(m.capacity.max(1));
        let warn = if pct >= crate::xdp::WARN_PERCENT {
            "  (nearly full)"
        } else {
            ""
        };
        println!(
            "    {:<16} {:>9} / {:<9} {pct:>3} %{warn}",
            m.map, m.entries, m.capacity
        );
    }
    if data.skipped_at_start > 0 {
        println!(
            "  {} stored bans/allowlist entries did not fit into the maps at start and are not \
             enforced (see the log)",
            data.skipped_at_start
        );
    }
    if data.bad_ban_records > 0 {
        println!(
            "  {} undecodable ban records skipped (not enforced; their keys are in the log)",
            data.bad_ban_records
        );
    }
    if let Some(c) = &data.crowdsec {
        crowdsec_status(c);
    }
    println!(
        "  protected (never banned; {} bans refused since start):",
        data.protect_refusals
    );
    for p in &data.protected {
        println!("    {:<40} {} ({})", p.net.to_string(), p.why, p.found_in);
    }
    Ok(())
}

fn crowdsec_status(c: &crate::crowdsec::CrowdsecStatus) {
    let state = match c.state {
        crate::crowdsec::LapiState::Starting => "not asked yet",
        crate::crowdsec::LapiState::Up => "up",
        crate::crowdsec::LapiState::Down => "DOWN (bans stay enforced; retrying)",
    };
    let last = c
        .last_sync
        .map_or_else(|| "never".to_owned(), crate::clock::format_utc);
    println!("  crowdsec LAPI {} {state}, last sync {last}", c.lapi_url);
    if let Some(e) = &c.last_error {
        println!("    last error: {e}");
    }
    println!(
        "    decisions: {} bans, {} user bans, {} lifted, {} already banned, {} allowlisted or \
         protected, {} invalid, {} other types; polls {} ({} failed)",
        c.bans_added,
        c.user_bans_added,
        c.bans_lifted,
        c.already_banned,
        c.refused_allowlisted,
        c.refused_invalid,
        c.ignored_type,
        c.polls,
        c.poll_failures
    );
    if let Some(m) = &c.machine {
        println!(
            "    machine {m}: {} alerts pushed, {} queued, {} dropped, {} failed pushes",
            c.alerts_pushed, c.push_queued, c.alerts_dropped, c.push_failures
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_formats() {
        let e = parse_import(
            "value,duration,reason\n# c\n10.0.0.1\n\n10.1.0.0/16,1h,\"scanner\"\n2001:db8::1,0,x\n",
        )
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].ttl_secs, None);
        assert_eq!(e[1].ttl_secs, Some(3600));
        assert_eq!(e[1].reason.as_deref(), Some("scanner"));
        assert_eq!(e[2].ttl_secs, Some(0));
        let err = parse_import("10.0.0.1\nnot-an-ip\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn cidrs_with_host_bits_are_refused_naming_the_network() {
        let t = parse_target("10.88.0.5/24").unwrap();
        let err = ban::check_host_bits("10.88.0.5/24", &t)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "refusing to ban 10.88.0.5/24: its address has host bits set, so it means the whole \
             network 10.88.0.0/24; write 10.88.0.0/24 if you mean that network, or use --force"
        );
        for ok in [
            "10.88.0.0/24",
            "10.88.0.5",
            "10.88.0.5/32",
            "2001:db8::/64",
            "::ffff:10.88.0.0/120",
        ] {
            assert_eq!(
                ban::check_host_bits(ok, &parse_target(ok).unwrap()),
                Ok(()),
                "{ok}"
            );
        }
        assert!(
            ban::check_host_bits("2001:db8::1/64", &parse_target("2001:db8::1/64").unwrap())
                .is_err()
        );
    }

    #[test]
    fn ipv4_mapped_targets_and_filters_are_ipv4() {
        assert_eq!(
            parse_target("::ffff:10.88.0.5").unwrap().to_string(),
            "10.88.0.5"
        );
        let cli = Cli::try_parse_from(["guard", "ban", "ls", "--ip", "::ffff:10.88.0.5"]).unwrap();
        let Command::Ban(BanCommand::Ls(args)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args.select.filter().unwrap().ip,
            Some("10.88.0.5".parse().unwrap())
        );
    }

    #[test]
    fn a_replaced_ban_says_what_changed() {
        use crate::control::Replaced;
        let h = 3_600_000;
        let now = crate::bans::BanView {
            addr: "10.88.0.5".parse().unwrap(),
            reason: "manual".into(),
            origin: crate::bans::Origin::Cli,
            created_at: 0,
            expires_at: Some(h),
            packets: 0,
            bytes: 0,
            last_hit: None,
            evidence: None,
        };
        let old = Replaced {
            reason: "probing: 10 distinct paths".into(),
            origin: crate::bans::Origin::Engine,
            expires_at: Some(4 * h),
        };
        assert_eq!(
            ban::describe_replaced(&old, &now, false),
            "it was already banned (engine ban); replaced: end 1970-01-01T04:00:00Z -> \
             1970-01-01T01:00:00Z (shorter: --extend keeps the later end); reason \
             \"probing: 10 distinct paths\" -> \"manual\""
        );
        let same = Replaced {
            reason: "manual".into(),
            origin: crate::bans::Origin::Cli,
            expires_at: Some(h),
        };
        assert_eq!(
            ban::describe_replaced(&same, &now, true),
            "it was already banned (cli ban); replaced: end unchanged (1970-01-01T01:00:00Z); \
             reason unchanged (\"manual\")"
        );
    }

    #[test]
    fn origin_filters_are_checked_on_the_command_line() {
        let cli = Cli::try_parse_from(["guard", "ban", "ls", "--origin", "rate-limit"]).unwrap();
        let Command::Ban(BanCommand::Ls(args)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.select.origin, Some(crate::bans::Origin::RateLimit));
        let err = Cli::try_parse_from(["guard", "ban", "rm", "--origin", "engin"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "unknown origin `engin`: expected one of cli, import, rate-limit, engine, crowdsec"
            ),
            "{err}"
        );
    }

    #[test]
    fn user_ban_flags_parse_and_conflict_with_address_ones() {
        let cli =
            Cli::try_parse_from(["guard", "ban", "add", "--user", "alice", "--ttl", "1h"]).unwrap();
        let Command::Ban(BanCommand::Add { user, target, .. }) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!((user.as_deref(), target), (Some("alice"), None));
        let cli = Cli::try_parse_from(["guard", "ban", "ls", "--user", "--json"]).unwrap();
        let Command::Ban(BanCommand::Ls(args)) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(args.user && args.json);
        let cli = Cli::try_parse_from(["guard", "ban", "rm", "--user", "alice"]).unwrap();
        let Command::Ban(BanCommand::Rm(args)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.user.as_deref(), Some("alice"));
        for args in [
            &["guard", "ban", "add", "192.0.2.1", "--user", "alice"][..],
            &["guard", "ban", "add", "--user", "alice", "--force"],
            &["guard", "ban", "add"],
            &["guard", "ban", "ls", "--user", "--origin", "engine"],
            &["guard", "ban", "ls", "--user", "--sort", "packets"],
            &["guard", "ban", "rm", "192.0.2.1", "--user", "alice"],
            &["guard", "ban", "rm", "--user", "alice", "--reason", "x"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn status_says_the_mode() {
        assert_eq!(
            describe_mode("shadow", None),
            "shadow: bans are decided and logged (\"would ban\"), never enforced"
        );
        assert_eq!(
            describe_mode("enforce", Some("shadow")),
            "enforce: bans are enforced in XDP; inline shadow: every request is passed, refusals \
             logged"
        );
    }

    #[test]
    fn socket_flag_before_or_after_subcommand() {
        let a = Cli::try_parse_from(["guard", "--socket", "/tmp/a.sock", "ban", "ls"]).unwrap();
        let b = Cli::try_parse_from(["guard", "ban", "ls", "--socket", "/tmp/a.sock"]).unwrap();
        assert_eq!(a.socket, b.socket);
        assert_eq!(a.socket, Some(PathBuf::from("/tmp/a.sock")));
    }
}
