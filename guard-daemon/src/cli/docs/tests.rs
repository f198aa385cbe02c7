use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

/// The commands an operator types most; each must be completed and listed in the manual.
const COMMANDS: [&str; 6] = ["ban", "allow", "logs", "stats", "quota", "plan"];

fn bash_completion() -> String {
    let mut out = Vec::new();
    completions(clap_complete::Shell::Bash, &mut out);
    String::from_utf8(out).expect("the script is UTF-8")
}

/// Runs `script` in a bash that has sourced the completion, or `None` (printed) without bash.
fn in_bash(script: &str) -> Option<String> {
    let mut child = match Command::new("bash")
        .args(["--norc", "--noprofile", "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: bash cannot be run ({e}); only the script's text is checked");
            return None;
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(bash_completion().as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.write_all(script.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// What bash offers after `line` (the word under the cursor is the line's last word, empty when
/// the line ends with a space), as the completion function registered for `guard` computes it.
fn complete(line: &str) -> Option<Vec<String>> {
    let script = format!(
        r#"spec=$(complete -p guard) || exit 3
func=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
line='{line}'
read -r -a COMP_WORDS <<< "$line"
[[ "$line" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="$line"; COMP_POINT=${{#line}}
"$func" guard "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#
    );
    in_bash(&script).map(|out| out.lines().map(str::to_owned).collect())
}

#[test]
fn bash_completion_names_every_command() {
    let script = bash_completion();
    assert!(script.contains("complete -F _guard"), "{script}");
    for command in COMMANDS {
        assert!(
            script.contains(&format!("guard,{command})")),
            "no case for `guard {command}` in the bash completion"
        );
    }
}

#[test]
fn bash_completes_commands_and_their_subcommands() {
    let Some(top) = complete("guard ") else {
        return;
    };
    for command in COMMANDS.iter().chain(&["completions", "man", "status"]) {
        assert!(
            top.iter().any(|w| w == command),
            "`guard <TAB>` offers no {command}: {top:?}"
        );
    }
    let ban = complete("guard ban ").unwrap();
    for sub in ["add", "rm", "ls", "import"] {
        assert!(
            ban.iter().any(|w| w == sub),
            "`guard ban <TAB>` offers no {sub}: {ban:?}"
        );
    }
    assert!(!ban.iter().any(|w| w == "logs"), "{ban:?}");
    let shells = complete("guard completions ").unwrap();
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == shell), "{shells:?}");
    }
    let flags = complete("guard ban add --").unwrap();
    for flag in ["--ttl", "--reason", "--force", "--extend"] {
        assert!(
            flags.iter().any(|w| w == flag),
            "`guard ban add --<TAB>` offers no {flag}: {flags:?}"
        );
    }
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    for shell in [clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        let mut out = Vec::new();
        completions(shell, &mut out);
        let text = String::from_utf8(out).unwrap();
        for command in COMMANDS {
            assert!(text.contains(command), "{shell}: no {command}");
        }
    }
}

fn man_page() -> String {
    let mut out = Vec::new();
    man(&mut out).unwrap();
    String::from_utf8(out).expect("the page is UTF-8")
}

#[test]
fn man_page_is_roff_with_its_sections() {
    let page = man_page();
    let lines: Vec<&str> = page.lines().collect();
    let th = lines
        .iter()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH title line");
    assert!(th.starts_with(".TH guard 1 "), "{th}");
    let name = lines
        .iter()
        .position(|l| *l == ".SH NAME")
        .expect("a NAME section");
    // The line after NAME is "name \- what it is", as `man`, `apropos` and `whatis` read it.
    assert!(
        lines[name + 1].starts_with("guard \\- "),
        "{}",
        lines[name + 1]
    );
    for section in [
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
    ] {
        assert!(lines.contains(&section), "no {section}");
    }
    for command in COMMANDS {
        assert!(
            page.contains(&format!("guard\\-{command}")),
            "the page does not list {command}"
        );
    }
    assert!(
        !page.contains("guard\\-help"),
        "the help command has no page"
    );
    assert!(
        page.contains(".SH EXTRA"),
        "the pointer to the commands' pages"
    );
}

/// A temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `man -l FILE` as `man guard` would show it, or `None` (printed) without man-db.
fn man_l(file: &std::path::Path) -> Option<String> {
    let out = Command::new("man")
        .arg("-l")
        .arg(file)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!(
                "SKIPPED: man cannot be run ({e}); the pages' text is checked by \
                 man_page_is_roff_with_its_sections"
            );
            return None;
        }
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `man -l` formats the page as `man guard` would (skipped, with the reason, without man-db).
#[test]
fn man_formats_the_page() {
    let dir = TempDir::new("man");
    let file = dir.0.join("guard.1");
    std::fs::write(&file, man_page()).unwrap();
    let Some(text) = man_l(&file) else {
        return;
    };
    // Formatted: the request lines are gone and the sections are headings.
    assert!(!text.contains(".SH"), "{text}");
    for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(
            text.lines().any(|l| l == heading),
            "no {heading} heading in:\n{text}"
        );
    }
    let name = text
        .lines()
        .skip_while(|l| *l != "NAME")
        .nth(1)
        .unwrap_or_default();
    let words: Vec<&str> = name.split_whitespace().take(4).collect();
    assert_eq!(words, ["guard", "-", "XDP", "bans"], "{name}");
    assert!(text.contains("guard-ban(1)"), "{text}");
}

#[test]
fn man_dir_writes_a_page_for_every_command() {
    let dir = TempDir::new("man-dir");
    man_pages(&dir.0).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for page in [
        "guard.1",
        "guard-ban.1",
        "guard-ban-add.1",
        "guard-logs.1",
        "guard-quota-show.1",
    ] {
        assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    // The top page written to the directory is the one `guard man` prints.
    assert_eq!(
        std::fs::read_to_string(dir.0.join("guard.1")).unwrap(),
        man_page()
    );
    let Some(text) = man_l(&dir.0.join("guard-ban-add.1")) else {
        return;
    };
    for word in ["--ttl", "--reason", "--extend", "--force"] {
        assert!(
            text.contains(word),
            "guard-ban-add(1) has no {word}:\n{text}"
        );
    }
}
