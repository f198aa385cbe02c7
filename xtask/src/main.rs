//! `cargo xtask …`: set-up, build, run and test guard.
mod eval;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Measure the request validator on the CRS corpus and the benign set.
    Eval(eval::EvalArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Eval(args) => eval::run(&args),
    }
}
