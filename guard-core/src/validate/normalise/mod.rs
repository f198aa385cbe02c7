//! Normalisation: turn one attacker-controlled value into the canonical text the detectors read.
//!
//! Every step undoes one way of hiding a payload: repeated percent-encoding (to a bounded
//! fixpoint, including `%uXXXX` and overlong UTF-8), HTML character references, Unicode
//! compatibility forms (full-width letters), case, runs of whitespace, null bytes and SQL comments
//! used to split keywords. The result keeps a few flags (what tricks were seen) because the tricks
//! themselves are evidence.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

use decode::{escape_decode, html_decode, percent_decode, utf7_decode};

mod decode;
#[cfg(test)]
mod tests;

/// What the normaliser noticed while undoing encodings: evidence of evasion in itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags, one per trick"
)]
pub struct Tricks {
    /// Percent-decoding changed the text at least twice (double encoding).
    pub multi_encoded: bool,
    /// A null byte was present (raw or encoded).
    pub null_byte: bool,
    /// An overlong UTF-8 sequence (`%c0%af`) or an IIS `%uXXXX` escape was decoded.
    pub overlong: bool,
    /// A run of UTF-7 (`+ADw-`) was decoded.
    pub utf7: bool,
    /// Control characters (other than tab and line breaks) or invalid UTF-8 after decoding.
    pub control: bool,
}

/// The views of one value that detectors run over.
#[derive(Debug, Default)]
pub struct Normalised {
    /// Decoded but not case-folded text (base64 tokens are case-sensitive).
    pub decoded: String,
    /// Decoded, NFKC-normalised, lower-cased, whitespace collapsed; SQL comments become a space.
    pub text: String,
    /// `text` with SQL comments removed entirely (`SEL/**/ECT` → `select`), when it differs.
    pub joined: Option<String>,
    /// `text` with shell quoting and escapes removed (`c'a't`, `c\at`, `${IFS}`), when it differs.
    pub shell: Option<String>,
    /// `shell` keeps block comments as text (globs such as `/et*/*wd`): SQL rules skip it.
    pub shell_keeps_comments: bool,
    /// Evasion tricks seen on the way.
    pub tricks: Tricks,
}

/// Slashes NFKC leaves alone but that Windows' best-fit code pages and some path APIs read as
/// `/` or `\` (division and fraction slashes, big solidus, box-drawing diagonals).
fn fold_slash(c: char) -> char {
    match c {
        '\u{2215}' | '\u{2044}' | '\u{29f8}' | '\u{2571}' => '/',
        '\u{2216}' | '\u{29f9}' | '\u{2572}' => '\\',
        c => c,
    }
}

/// Normalises one value. `plus_is_space`: the value came from a query string or a form body,
/// where `+` encodes a space. `max_passes` bounds the decoding fixpoint.
pub fn normalise(raw: &str, plus_is_space: bool, max_passes: u32) -> Normalised {
    let mut tricks = Tricks::default();
    // `+` is a space in query strings and form bodies, and in any value that is visibly
    // form-encoded (escapes, no literal spaces).
    let form_like = raw.contains('%') && !raw.contains(' ');
    let mut cur: Cow<'_, str> = if (plus_is_space || form_like) && raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    let mut url_passes = 0;
    for _ in 0..max_passes.max(1) {
        let mut changed = false;
        if let Some(next) = percent_decode(&cur, &mut tricks) {
            url_passes += 1;
            cur = Cow::Owned(next);
            changed = true;
        }
        if let Some(next) = html_decode(&cur) {
            cur = Cow::Owned(next);
            changed = true;
        }
        if let Some(next) = escape_decode(&cur, &mut tricks) {
            cur = Cow::Owned(next);
            changed = true;
        }
        if let Some(next) = utf7_decode(&cur) {
            tricks.utf7 = true;
            cur = Cow::Owned(next);
            changed = true;
        }
        if !changed {
            break;
        }
    }
    tricks.multi_encoded = url_passes >= 2;
    if cur.contains('\0') {
        tricks.null_byte = true;
    }
    tricks.control = cur
        .chars()
        .any(|c| (c.is_control() && !matches!(c, '\0' | '\t' | '\n' | '\r')) || c == '\u{fffd}');
    let decoded = if cur.is_ascii() {
        cur.into_owned()
    } else {
        // The acute accent stands in for a quote; NFKC would split it into a space and a
        // combining mark.
        cur.replace('\u{b4}', "'")
            .nfkc()
            .map(fold_slash)
            .collect::<String>()
    };
    let text = fold(&decoded, Comments::Space);
    let joined = decoded
        .contains("/*")
        .then(|| fold(&decoded, Comments::Remove))
        .filter(|j| *j != text);
    // Globs like `/et*/*wd` look like SQL comments to `fold`: the shell view keeps them.
    let shell_keeps_comments = decoded.contains("/*") || decoded.contains("*/");
    let shell = if shell_keeps_comments {
        let kept = fold(&decoded, Comments::Keep);
        shell_view(&kept).or(Some(kept))
    } else {
        shell_view(&text)
    }
    .filter(|s| *s != text);
    Normalised {
        decoded,
        text,
        joined,
        shell,
        shell_keeps_comments,
        tricks,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comments {
    /// Block comments become a space.
    Space,
    /// Empty block comments vanish (`SEL/**/ECT`), others become a space.
    Remove,
    /// Block comments are ordinary text.
    Keep,
}

/// Lower-cases, drops null bytes, collapses whitespace and rewrites SQL block comments.
/// `MySQL`'s executable comments (`/*!50000select*/`) keep their content.
fn fold(s: &str, comments: Comments) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut space = false;
    let push_space = |out: &mut String, space: &mut bool| {
        if !*space && !out.is_empty() {
            out.push(' ');
        }
        *space = true;
    };
    while let Some(c) = chars.next() {
        if comments != Comments::Keep && c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            if chars.peek() == Some(&'!') {
                // Executable comment: drop the marker and version digits, keep the content.
                chars.next();
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                push_space(&mut out, &mut space);
                continue;
            }
            // Skip to the closing `*/` (or the end). In the joined view only an empty comment
            // joins (`SEL/**/ECT`); one with text in it still separates words.
            let mut prev = '\0';
            let mut empty = true;
            for d in chars.by_ref() {
                if prev == '*' && d == '/' {
                    break;
                }
                if d != '*' {
                    empty = false;
                }
                prev = d;
            }
            if comments == Comments::Space || !empty {
                push_space(&mut out, &mut space);
            }
            continue;
        }
        if comments != Comments::Keep && c == '*' && chars.peek() == Some(&'/') {
            chars.next();
            if comments == Comments::Space {
                push_space(&mut out, &mut space);
            }
            continue;
        }
        if c == '\0' {
            continue;
        }
        // Ideographic full stops stand in for dots in host names (`169。254。169。254`).
        let c = match c {
            '\u{3002}' | '\u{ff61}' => '.',
            // Typographic quotes are read as the ASCII quotes they imitate.
            '\u{2018}' | '\u{2019}' | '\u{201b}' | '\u{2032}' | '\u{02bc}' => '\'',
            '\u{201c}' | '\u{201d}' | '\u{201f}' | '\u{2033}' => '"',
            other => other,
        };
        if c == '\n' || c == '\r' {
            // Line breaks separate shell commands and header lines: keep one.
            if space && out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
            space = true;
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            push_space(&mut out, &mut space);
            continue;
        }
        space = false;
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    while out.ends_with([' ', '\n']) {
        out.pop();
    }
    out
}

/// Removes the shell's ways to split a word: quotes, backslashes, `^` (cmd.exe), `$@`, empty
/// `$()`/`${}` and `$IFS` (which becomes a space). Returns `None` when nothing applies.
fn shell_view(text: &str) -> Option<String> {
    if !text
        .bytes()
        .any(|b| matches!(b, b'\'' | b'"' | b'\\' | b'^' | b'$' | b'['))
    {
        return None;
    }
    let t = text
        .replace("${ifs}", " ")
        .replace("$ifs", " ")
        .replace("$()", "")
        .replace("<()", "")
        .replace(">()", "")
        .replace("${}", "");
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    let mut prev_alpha = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '\\' | '^' => continue,
            // Special parameters and unset one-letter variables inside a word expand to nothing:
            // `c$@at`, `c$$at`, `uname$u`.
            '$' => match chars.peek() {
                Some('@' | '*' | '$' | '-' | '!' | '#' | '?' | '_' | '0'..='9') => {
                    chars.next();
                    continue;
                }
                Some(n) if n.is_ascii_lowercase() => {
                    // `uname$u`, `$u wget`: a one-letter variable, almost surely unset.
                    let mut look = chars.clone();
                    look.next();
                    if prev_alpha || !look.peek().is_some_and(char::is_ascii_alphanumeric) {
                        chars.next();
                        continue;
                    }
                }
                _ => {}
            },
            // Bracket globs: `/etc/pa[s]swd`, `/[e//]tc`, `[!q]asswd` (stands for one character).
            '[' => {
                let inner: String = chars.clone().take(17).take_while(|&d| d != ']').collect();
                let letters: Vec<char> =
                    inner.chars().filter(char::is_ascii_alphanumeric).collect();
                let closed = chars.clone().nth(inner.chars().count()) == Some(']');
                if closed
                    && !inner.is_empty()
                    && inner
                        .chars()
                        .all(|d| d.is_ascii_alphanumeric() || matches!(d, '/' | '!' | '?' | '*'))
                {
                    let one = if inner.starts_with('!') || inner == "?" || inner == "*" {
                        Some('?')
                    } else if letters.len() == 1 {
                        Some(letters[0])
                    } else {
                        None
                    };
                    if let Some(x) = one {
                        out.push(x);
                        for _ in 0..=inner.chars().count() {
                            chars.next();
                        }
                        prev_alpha = x.is_ascii_alphabetic();
                        continue;
                    }
                }
            }
            _ => {}
        }
        prev_alpha = c.is_ascii_alphabetic();
        out.push(c);
    }
    Some(out)
}
