//! The decoders behind normalisation: percent-encoding (with `%uXXXX` and overlong UTF-8),
//! HTML character references, JavaScript/PHP escapes and UTF-7. Each does one pass and returns
//! `None` when it changed nothing, so the caller can iterate to a fixpoint.

use super::Tricks;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One pass of percent-decoding (`%XX`, `%uXXXX`), with overlong UTF-8 folded to ASCII.
/// Returns `None` when the input has no valid escape.
pub(super) fn percent_decode(s: &str, tricks: &mut Tricks) -> Option<String> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                changed = true;
                continue;
            }
            if matches!(b.get(i + 1), Some(b'u' | b'U'))
                && let Some(v) = b.get(i + 2..i + 6).and_then(|d| {
                    d.iter()
                        .try_fold(0u32, |acc, &x| hex(x).map(|h| acc << 4 | u32::from(h)))
                })
            {
                let c = char::from_u32(v).unwrap_or('\u{fffd}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                tricks.overlong = true;
                i += 6;
                changed = true;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    if !changed {
        return None;
    }
    Some(utf8_lossy_overlong(&out, tricks))
}

/// Decodes bytes as UTF-8, mapping overlong encodings of ASCII (`C0 AF` = `/`) to their
/// character instead of U+FFFD.
fn utf8_lossy_overlong(bytes: &[u8], tricks: &mut Tricks) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    let mut fixed = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b0 = bytes[i];
        let cont = |j: usize| bytes.get(j).is_some_and(|&x| x & 0xc0 == 0x80);
        if (b0 == 0xc0 || b0 == 0xc1) && cont(i + 1) {
            fixed.push(((b0 & 0x1f) << 6) | (bytes[i + 1] & 0x3f));
            tricks.overlong = true;
            i += 2;
            continue;
        }
        if b0 == 0xe0 && cont(i + 1) && cont(i + 2) && bytes[i + 1] < 0xa0 {
            let v = (u32::from(bytes[i + 1] & 0x3f) << 6) | u32::from(bytes[i + 2] & 0x3f);
            if v < 0x80 {
                fixed.push(v as u8);
                tricks.overlong = true;
                i += 3;
                continue;
            }
        }
        fixed.push(b0);
        i += 1;
    }
    String::from_utf8_lossy(&fixed).into_owned()
}

/// Decodes HTML character references: numeric (`&#60;`, `&#x3c;`, with or without `;`) and the
/// named ones used to hide markup and script. Returns `None` when nothing was decoded.
pub(super) fn html_decode(s: &str) -> Option<String> {
    if !s.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some((c, used)) = entity(after) {
            out.push(c);
            rest = &after[used..];
            changed = true;
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Parses one character reference after `&`; returns the character and the bytes consumed.
fn entity(after: &str) -> Option<(char, usize)> {
    let b = after.as_bytes();
    if b.first() == Some(&b'#') {
        let (radix, start) = if matches!(b.get(1), Some(b'x' | b'X')) {
            (16, 2)
        } else {
            (10, 1)
        };
        let digits = b[start..]
            .iter()
            .take(8)
            .take_while(|c| c.is_ascii_hexdigit() && (radix == 16 || c.is_ascii_digit()))
            .count();
        if digits == 0 {
            return None;
        }
        let v = u32::from_str_radix(&after[start..start + digits], radix).ok()?;
        let c = char::from_u32(v).unwrap_or('\u{fffd}');
        let mut used = start + digits;
        if b.get(used) == Some(&b';') {
            used += 1;
        }
        return Some((c, used));
    }
    let name_len = b
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let name = after.get(..name_len)?.to_ascii_lowercase();
    let c = match name.as_str() {
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "amp" => '&',
        "colon" => ':',
        "semi" => ';',
        "tab" => '\t',
        "newline" => '\n',
        "lpar" => '(',
        "rpar" => ')',
        "sol" => '/',
        "bsol" => '\\',
        "comma" => ',',
        "period" => '.',
        "excl" => '!',
        "num" => '#',
        "dollar" => '$',
        "percnt" => '%',
        "equals" => '=',
        "nbsp" => ' ',
        "grave" => '`',
        "lsqb" | "lbrack" => '[',
        "rsqb" | "rbrack" => ']',
        "lcub" | "lbrace" => '{',
        "rcub" | "rbrace" => '}',
        _ => return None,
    };
    let mut used = name_len;
    if b.get(used) == Some(&b';') {
        used += 1;
    } else if !matches!(name.as_str(), "lt" | "gt" | "quot" | "amp") {
        // Only the legacy entities are recognised without their semicolon.
        return None;
    }
    Some((c, used))
}

/// Decodes JavaScript/PHP/C escapes: `\\xHH`, `\\uHHHH`, `\\u{H…}`. Returns `None` when there
/// are none.
pub(super) fn escape_decode(s: &str, tricks: &mut Tricks) -> Option<String> {
    if !s.contains('\\') {
        return None;
    }
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                Some(b'x' | b'X') => {
                    if let (Some(h), Some(l)) = (
                        b.get(i + 2).copied().and_then(hex),
                        b.get(i + 3).copied().and_then(hex),
                    ) {
                        out.push(h << 4 | l);
                        i += 4;
                        changed = true;
                        continue;
                    }
                }
                Some(b'u' | b'U') => {
                    let (start, end) = if b.get(i + 2) == Some(&b'{') {
                        let close = b[i + 3..].iter().take(7).position(|&c| c == b'}');
                        match close {
                            Some(n) => (i + 3, i + 3 + n),
                            None => (0, 0),
                        }
                    } else {
                        (i + 2, i + 6)
                    };
                    if end > start
                        && let Some(v) = b.get(start..end).and_then(|d| {
                            d.iter()
                                .try_fold(0u32, |acc, &x| hex(x).map(|h| acc << 4 | u32::from(h)))
                        })
                    {
                        let c = char::from_u32(v).unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i = if b.get(end) == Some(&b'}') {
                            end + 1
                        } else {
                            end
                        };
                        changed = true;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    changed.then(|| utf8_lossy_overlong(&out, tricks))
}

/// Decodes UTF-7 runs (`+ADw-script+AD4-` → `<script>`), the charset trick that hides markup
/// from byte-level filters. Only runs that decode to ASCII punctuation or letters are replaced.
pub(super) fn utf7_decode(s: &str) -> Option<String> {
    if !s.contains("+A") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(pos) = rest.find('+') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
            .count();
        let run = &after[..len];
        let bytes = crate::text::base64_decode(run);
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        let decoded = String::from_utf16(&units).ok().filter(|d| {
            !d.is_empty() && run.len() >= 3 && d.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        });
        if let Some(d) = decoded {
            out.push_str(&d);
            rest = after[len..].strip_prefix('-').unwrap_or(&after[len..]);
            changed = true;
        } else {
            out.push('+');
            rest = after;
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}
