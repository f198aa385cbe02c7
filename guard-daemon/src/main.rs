//! The `guard` binary: parse the command line, set up logging, hand over to the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = guard_daemon::cli::Cli::parse();
    if !matches!(cli.command, guard_daemon::cli::Command::Run(_)) {
        // A command's output piped into a reader that stops early (`guard logs | head`) ends the
        // command quietly, as it does other tools, instead of a panic on the failed write. The
        // daemon keeps Rust's default (SIGPIPE ignored): a client closing a socket must never
        // end it.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe {
            nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match guard_daemon::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
