//! The command line: argument definitions and dispatch to each subcommand.
use clap::{Parser, Subcommand};

/// guard — a Linux host traffic guard.
#[derive(Debug, Parser)]
#[command(name = "guard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Run the request validator on one request or a file of cases (no daemon needed).
    Inspect(crate::validate::cli::InspectArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("guard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Inspect(args) => crate::validate::cli::run(&args),
    }
}
