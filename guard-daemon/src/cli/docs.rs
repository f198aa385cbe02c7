//! `guard completions SHELL` and `guard man`: the shell completion script and the manual pages,
//! both generated from the clap definitions of [`super::Cli`], so they never fall behind the
//! commands. They are printed on stdout (or, for `man --dir`, written as files) for the installer
//! to put where the shell or `man` looks (see the README's systemd recipe).
use std::io::Write;
use std::path::Path;

use clap::CommandFactory as _;

use super::Cli;

/// The NAME line of guard(1): what `whatis guard` and `apropos` show.
const ABOUT: &str =
    "XDP bans and rate limits, HTTP behaviour scoring, and the CLI that manages them";

/// The DESCRIPTION of guard(1).
const LONG_ABOUT: &str = "guard drops banned clients in the kernel with XDP, limits each \
source's packet rate, reads the HTTP traffic of the protected ports (the tap) or sits in the \
request path (the reverse proxy or a forward-auth endpoint), bans clients whose requests show an \
attack, and keeps its bans in an on-disk store so that they survive restarts. `guard run` is the \
daemon; every other command but `config check`, `inspect`, `ai probe`, `completions` and `man` \
talks to it over its control socket (root only; read-only commands may be opened to a group).";

/// Where the rest is written down.
const AFTER_HELP: &str = "Each command has a page of its own (guard-ban(1), guard-ban-add(1), \
...), written by `guard man --dir DIR`; `guard COMMAND --help` says the same. The configuration \
keys are listed in guard.example.toml, and the README walks through operating guard.";

/// The command line as the manual pages describe it.
fn man_command() -> clap::Command {
    Cli::command()
        .about(ABOUT)
        .long_about(LONG_ABOUT)
        .after_long_help(AFTER_HELP)
        .disable_help_subcommand(true)
}

/// Writes the completion script of `shell` for the `guard` binary.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "guard", out);
}

/// Writes the `guard(1)` manual page (roff): name, synopsis, description, options, the
/// commands.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = man_command();
    command.build();
    clap_mangen::Man::new(command).render(out)
}

/// Writes `guard.1` and a page for every command (`guard-ban.1`, `guard-ban-add.1`, …) into
/// `dir`, which must exist.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    clap_mangen::generate_to(man_command(), dir)
}

#[cfg(test)]
mod tests;
