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
    /// AI triage set-up.
    Ai {
        #[command(subcommand)]
        command: crate::ai::cli::AiCommand,
    },
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("guard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Ai { command } => crate::ai::cli::run(command),
    }
}
