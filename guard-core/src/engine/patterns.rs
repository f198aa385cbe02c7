//! What the rules look for in a request: the path decoded the way a server would read it,
//! prefix and substring lists, static assets, trailing numeric ids, traversal sequences.
use std::borrow::Cow;
use std::sync::LazyLock;

/// Percent-decoding passes: a double- or triple-encoded `%252e%252e%252f` still decodes to `../`.
const DECODE_PASSES: usize = 3;

/// The path (or query) percent-decoded up to [`DECODE_PASSES`] times, `+` left alone,
/// backslashes turned into slashes, repeated slashes collapsed and lower-cased; bytes that are
/// not UTF-8 are replaced.
/// Borrowed when there is nothing to change (the common case).
#[must_use]
pub fn normalise(raw: &str) -> Cow<'_, str> {
    let plain = raw
        .bytes()
        .all(|b| !(b == b'%' || b == b'\\' || b.is_ascii_uppercase() || b >= 0x80))
        && !raw.contains("//");
    if plain {
        return Cow::Borrowed(raw);
    }
    let mut bytes: Cow<'_, [u8]> = Cow::Borrowed(raw.as_bytes());
    for _ in 0..DECODE_PASSES {
        if !bytes.contains(&b'%') {
            break;
        }
        let decoded = percent_decode(&bytes);
        if decoded.len() == bytes.len() {
            break;
        }
        bytes = Cow::Owned(decoded);
    }
    let mut out = String::with_capacity(bytes.len());
    let mut last_slash = false;
    for c in String::from_utf8_lossy(&bytes).chars() {
        let c = if c == '\\' {
            '/'
        } else {
            c.to_ascii_lowercase()
        };
        if c == '/' && last_slash {
            continue;
        }
        last_slash = c == '/';
        out.push(c);
    }
    Cow::Owned(out)
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True if `path` is `prefix` or continues it with a new segment or an extension
/// (`/admin`, `/admin/users`, `/admin.php` for `/admin`; not `/administrators`).
#[must_use]
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '.', ';']))
}

/// True if any of `prefixes` matches `path` (see [`has_prefix`]).
#[must_use]
pub fn any_prefix(path: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| has_prefix(path, p))
}

/// True if a segment of `path` (extension dropped) is one of `words`.
#[must_use]
pub fn any_segment(path: &str, words: &[String]) -> bool {
    path.split('/')
        .map(|seg| seg.split('.').next().unwrap_or(seg))
        .any(|seg| !seg.is_empty() && words.iter().any(|w| w == seg))
}

/// Many substrings searched in one pass over the text: a table with one bit per byte pair that
/// starts a needle finds the candidates, which are then compared. Optionally ASCII
/// case-insensitive.
#[derive(Debug, Clone)]
pub struct Matcher {
    needles: Vec<Vec<u8>>,
    /// One bit per byte pair (as a big-endian `u16`) that starts a needle of 2 bytes or more.
    pairs: Box<[u64]>,
    /// (first pair, needle index), sorted.
    by_pair: Vec<(u16, usize)>,
    /// Needles of one byte.
    single: Vec<u8>,
    ignore_case: bool,
}

impl Matcher {
    #[must_use]
    pub fn new<S: AsRef<str>>(needles: &[S], ignore_case: bool) -> Self {
        let mut m = Self {
            needles: Vec::new(),
            pairs: vec![0u64; 1024].into_boxed_slice(),
            by_pair: Vec::new(),
            single: Vec::new(),
            ignore_case,
        };
        for needle in needles {
            let mut bytes = needle.as_ref().as_bytes().to_vec();
            if ignore_case {
                bytes.make_ascii_lowercase();
            }
            match bytes.len() {
                0 => {}
                1 => m.single.push(bytes[0]),
                _ => {
                    let pair = u16::from_be_bytes([bytes[0], bytes[1]]);
                    m.pairs[usize::from(pair >> 6)] |= 1 << (pair & 63);
                    m.by_pair.push((pair, m.needles.len()));
                    m.needles.push(bytes);
                }
            }
        }
        m.by_pair.sort_unstable();
        m
    }

    /// True if `text` contains any needle.
    #[must_use]
    pub fn is_match(&self, text: &str) -> bool {
        let h = text.as_bytes();
        let fold = |b: u8| {
            if self.ignore_case {
                b.to_ascii_lowercase()
            } else {
                b
            }
        };
        if !self.single.is_empty() && h.iter().any(|b| self.single.contains(&fold(*b))) {
            return true;
        }
        for i in 0..h.len().saturating_sub(1) {
            let pair = u16::from_be_bytes([fold(h[i]), fold(h[i + 1])]);
            if self.pairs[usize::from(pair >> 6)] & (1 << (pair & 63)) == 0 {
                continue;
            }
            let first = self.by_pair.partition_point(|(p, _)| *p < pair);
            for &(_, n) in self.by_pair[first..].iter().take_while(|(p, _)| *p == pair) {
                let needle = &self.needles[n];
                if let Some(window) = h.get(i..i + needle.len())
                    && (window == needle.as_slice()
                        || (self.ignore_case && window.eq_ignore_ascii_case(needle)))
                {
                    return true;
                }
            }
        }
        false
    }
}

/// True if the last segment of `path` ends in one of `extensions` (given without the dot).
#[must_use]
pub fn is_static(path: &str, extensions: &[String]) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rsplit_once('.')
        .is_some_and(|(_, ext)| extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Sequences that walk out of the document root or name files outside it, in a normalised
/// (decoded, slash-folded, lower-case) path or query.
const TRAVERSAL: &[&str] = &[
    "../",
    "/..;/",
    "/etc/passwd",
    "/etc/shadow",
    "/proc/self/",
    "c:/windows/",
    "win.ini",
    "boot.ini",
    "..\u{fffd}",
];

/// True if the normalised path or query tries a path traversal. A path ending in `/..` counts
/// too; overlong UTF-8 slashes (`%c0%af`) decode to replacement characters and are caught.
#[must_use]
pub fn is_traversal(path: &str, query: &str) -> bool {
    static MATCHER: LazyLock<Matcher> = LazyLock::new(|| Matcher::new(TRAVERSAL, false));
    let hit = |s: &str| MATCHER.is_match(s) || s.ends_with("/..");
    hit(path) || hit(query) || query.starts_with("..")
}

/// The number a path ends in (`/users/42`, `/users/42/`), as the seed's `(\d+)$`, with the
/// prefix before it. Numbers longer than 18 digits are not ids.
#[must_use]
pub fn trailing_id(path: &str) -> Option<(&str, u64)> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let start = trimmed
        .bytes()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &trimmed[start..];
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    Some((&trimmed[..start], digits.parse().ok()?))
}
