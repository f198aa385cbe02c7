//! The shape of the request line and of the headers: versions other than HTTP/1.x and 2,
//! request targets that are not a path, contradictory `Connection` options, malformed ranges,
//! headers that ordinary clients never send (`WebDAV` locks, `Proxy`, URL overrides), charsets
//! and codings nobody asks for, `Content-Type` parameters that smuggle a second media type, and
//! malformed or oversized parameters; at higher paranoia, bodies without a type, unusual
//! `Cache-Control` directives, repeated parameters and URLs of other sites in parameters.

use super::super::detect::Accumulator;
use super::super::{Category, Request};

const P: Category = Category::Protocol;

/// Charsets ordinary clients declare; any other in `Content-Type`, `Accept` or a multipart part
/// is a finding (EBCDIC, UTF-16/32 and UTF-7 hide payloads from byte-level inspection).
pub const KNOWN_CHARSETS: &[&str] = &[
    "utf-8",
    "utf8",
    "iso-8859-1",
    "iso-8859-15",
    "us-ascii",
    "ascii",
    "windows-1252",
    "latin1",
];

/// Content codings a client may accept (RFC 9110 and the IANA registry).
const KNOWN_CODINGS: &[&str] = &[
    "gzip",
    "x-gzip",
    "deflate",
    "br",
    "zstd",
    "compress",
    "x-compress",
    "identity",
    "exi",
    "pack200-gzip",
    "aes128gcm",
    "dcb",
    "dcz",
    "*",
];

/// Headers that some proxy in front of the application may act on when a client names them in
/// `Connection` (and so strips them): naming them is a way to remove a proxy's own headers.
const STRIPPABLE: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
];

/// The first header called `name`.
pub fn header<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The protocol version of the request line: HTTP/1.0, 1.1, 2 and 3 are fine; no version at all
/// is HTTP/0.9 (no headers, a smuggling vector); anything else is not HTTP.
pub fn version(version: Option<&str>, acc: &mut Accumulator) {
    let Some(v) = version else {
        return;
    };
    match v.trim() {
        "HTTP/1.1" | "HTTP/1.0" | "HTTP/2" | "HTTP/2.0" | "HTTP/3" => {}
        "" => acc.add(P, "proto-http09", 5, "version", "no version (HTTP/0.9)"),
        other => acc.add(P, "proto-version", 5, "version", other),
    }
}

/// The request target is a path (`/…`), `*` for OPTIONS, an authority for CONNECT, or an
/// absolute URL; anything else (`\index.html`) is meant to confuse a server's path handling.
pub fn target(req: &Request<'_>, acc: &mut Accumulator) {
    let p = req.path;
    let ok = p.is_empty()
        || p.starts_with('/')
        || (p == "*" && req.method.eq_ignore_ascii_case("OPTIONS"))
        || req.method.eq_ignore_ascii_case("CONNECT")
        || p.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        });
    if !ok {
        acc.add(P, "proto-request-target", 4, "path", p);
    }
}

/// `Connection` options: repeated or contradictory (`keep-alive, close`), or naming a header a
/// proxy relies on so that the proxy drops it.
pub fn connection(value: &str, acc: &mut Accumulator) {
    let mut seen: Vec<String> = Vec::new();
    for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
        if token.is_empty() {
            continue;
        }
        if STRIPPABLE.contains(&token.as_str()) || token.starts_with("x-forwarded-") {
            acc.add(P, "proto-connection-strip", 4, "header:Connection", value);
        }
        if seen.contains(&token) {
            acc.add(P, "proto-connection", 3, "header:Connection", value);
        }
        seen.push(token);
    }
    if seen.iter().any(|t| t == "close") && seen.iter().any(|t| t == "keep-alive") {
        acc.add(P, "proto-connection", 3, "header:Connection", value);
    }
}

/// A `Range` (or `Request-Range`) header: a byte-range set must be well formed, and a client
/// that wants many pieces of one resource at once is exhausting the server.
pub fn range(value: &str, field: &str, acc: &mut Accumulator) {
    let lower = value.trim().to_ascii_lowercase();
    let Some(set) = lower.strip_prefix("bytes=") else {
        acc.add(P, "proto-range-unit", 4, field, value);
        return;
    };
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let valid = |spec: &str| {
        let Some((first, last)) = spec.split_once('-') else {
            return false;
        };
        let num = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        match (first.is_empty(), last.is_empty()) {
            (true, false) => num(last),
            (false, true) => num(first),
            (false, false) => {
                num(first) && num(last) && first.parse::<u64>().ok() <= last.parse::<u64>().ok()
            }
            (true, true) => false,
        }
    };
    if specs.is_empty() || !specs.iter().all(|s| valid(s)) {
        acc.add(P, "proto-range-syntax", 4, field, value);
    }
    if specs.len() > 10 {
        acc.add(P, "proto-range-many", 5, field, value);
    } else if specs.len() > 5 {
        acc.add(P, "proto-range-several", 3, field, value);
    }
}

/// Headers ordinary clients never send to a web application: `Proxy` (httpoxy), URL overrides
/// that bypass front-end access rules, framework-internal headers, `WebDAV` locking headers,
/// content headers on a request without content and, at paranoia 2, `Accept-Charset`.
pub fn restricted(req: &Request<'_>, paranoia: u8, acc: &mut Accumulator) {
    let bodyless = req.body.is_empty()
        && ["GET", "HEAD", "OPTIONS", "DELETE"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(req.method));
    for &(name, value) in req.headers {
        let lower = name.to_ascii_lowercase();
        let field = format!("header:{name}");
        match lower.as_str() {
            "proxy" => acc.add(P, "proto-httpoxy", 5, &field, value),
            "x-middleware-subrequest" => acc.add(P, "proto-internal-header", 5, &field, value),
            "x-original-url" | "x-rewrite-url" => {
                acc.add(P, "proto-url-override", 4, &field, value);
            }
            "if" | "lock-token" | "destination" | "overwrite" | "timeout" => {
                acc.add(P, "proto-webdav-header", 3, &field, value);
            }
            "content-range" | "content-encoding" if bodyless => {
                acc.add(P, "proto-content-header-without-content", 3, &field, value);
            }
            "accept-charset" if paranoia >= 2 => {
                acc.add(P, "proto-accept-charset", 3, &field, value);
            }
            _ => {}
        }
    }
}

/// `Accept` asking for an unusual charset; `Accept-Encoding` that is no list of codings.
pub fn accept(req: &Request<'_>, paranoia: u8, acc: &mut Accumulator) {
    if let Some(a) = header(req, "accept") {
        let lower = a.to_ascii_lowercase();
        let odd = lower
            .split([',', ';'])
            .filter_map(|p| p.trim().strip_prefix("charset="))
            .map(|c| c.trim().trim_matches(['"', '\'']))
            .any(|c| !KNOWN_CHARSETS.contains(&c));
        if odd {
            acc.add(P, "proto-accept-charset", 4, "header:Accept", a);
        }
    }
    if let Some(e) = header(req, "accept-encoding") {
        let well_formed = e.len() <= 200
            && e.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'_' | b'.' | b';' | b'=' | b',' | b' ' | b'*' | b'\t'
                    )
            });
        let unknown = || {
            e.split(',')
                .map(|c| {
                    c.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .any(|c| !c.is_empty() && !KNOWN_CODINGS.contains(&c.as_str()))
        };
        if !well_formed || (paranoia >= 3 && unknown()) {
            acc.add(P, "proto-accept-encoding", 3, "header:Accept-Encoding", e);
        }
    }
}

/// A body without a `Content-Type` (paranoia 2): browsers always name what they send, scripts
/// often do not.
pub fn body_type(req: &Request<'_>, paranoia: u8, acc: &mut Accumulator) {
    if paranoia >= 2 && !req.body.is_empty() && req.content_type.is_none() {
        acc.add(P, "proto-body-without-type", 3, "body", "no Content-Type");
    }
}

/// Request `Cache-Control` directives (paranoia 3): anything but the request directives of
/// RFC 9111 is a client probing caches.
pub fn cache_control(req: &Request<'_>, paranoia: u8, acc: &mut Accumulator) {
    if paranoia < 3 {
        return;
    }
    let Some(cc) = header(req, "cache-control") else {
        return;
    };
    let valid = cc.split(',').all(|d| {
        let d = d.trim().to_ascii_lowercase();
        let (name, value) = d.split_once('=').unwrap_or((d.as_str(), ""));
        match name {
            "max-age" | "min-fresh" | "stale-if-error" => {
                !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
            }
            "max-stale" => value.bytes().all(|b| b.is_ascii_digit()),
            "no-cache" | "no-store" | "no-transform" | "only-if-cached" => value.is_empty(),
            _ => false,
        }
    });
    if !valid {
        acc.add(P, "proto-cache-control", 3, "header:Cache-Control", cc);
    }
}

/// `Content-Type` parameters: each is `name=value`, and a boundary or charset whose value is
/// itself a media type tries to make two parsers read the body differently.
pub fn content_type_syntax(content_type: &str, acc: &mut Accumulator) {
    let f = "header:Content-Type";
    for param in content_type.split(';').skip(1) {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let Some((name, value)) = param.split_once('=') else {
            acc.add(P, "proto-content-type-syntax", 3, f, content_type);
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_ascii_lowercase();
        if matches!(name.as_str(), "boundary" | "charset") && media_type(&value) {
            acc.add(P, "proto-content-type-confusion", 5, f, content_type);
        }
    }
}

/// `type/subtype`, the shape of a media type.
fn media_type(s: &str) -> bool {
    s.split_once('/').is_some_and(|(t, sub)| {
        !t.is_empty()
            && !sub.is_empty()
            && t.bytes().all(|b| b.is_ascii_lowercase())
            && sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'*'))
    })
}

/// The obsolete RFC 2109 cookie syntax (`$Version=1; …`): parsers that still honour it read
/// quoted values across `;`, which hides cookies from the ones that do not.
pub fn cookie_version(req: &Request<'_>, acc: &mut Accumulator) {
    for &(name, value) in req.headers {
        if name.eq_ignore_ascii_case("cookie")
            && value
                .trim_start()
                .get(..8)
                .is_some_and(|v| v.eq_ignore_ascii_case("$version"))
        {
            acc.add(P, "proto-cookie-v1", 4, "header:Cookie", value);
        }
    }
}

/// Query and form parameters: malformed percent-escapes (a decoder that skips them lets a
/// payload through another that does not), line breaks in names, names too long to be real,
/// and more parameters than any form has.
pub fn parameters(req: &Request<'_>, max_body_bytes: usize, paranoia: u8, acc: &mut Accumulator) {
    let body = super::body_text(req, "x-www-form-urlencoded", max_body_bytes);
    let mut count = 0usize;
    let mut names: Vec<&str> = Vec::new();
    let own_host = header(req, "host").map(str::to_ascii_lowercase);
    for (kind, s) in [("query", req.query), ("form", body)] {
        if let Some(at) = bad_escape(s) {
            let end = (at + 3).min(s.len());
            acc.add(
                P,
                "proto-bad-escape",
                3,
                kind,
                s.get(at..end).unwrap_or("%"),
            );
        }
        for pair in s.split('&').filter(|p| !p.is_empty()) {
            count += 1;
            // A name without a value may be the last line of a body: its final line break is
            // not part of it.
            let name = pair
                .split_once('=')
                .map_or_else(|| trim_line_ends(pair), |(n, _)| n);
            let lower = name.to_ascii_lowercase();
            if name.contains(['\r', '\n']) || lower.contains("%0a") || lower.contains("%0d") {
                acc.add(P, "proto-newline-in-name", 4, kind, name);
            }
            if name.len() > 100 {
                acc.add(P, "proto-long-name", 3, kind, name);
            }
            if let Some((_, value)) = pair.split_once('=') {
                if include_name(&lower) && remote_url(value) {
                    acc.add(Category::RfiSsrf, "rfi-include-parameter", 4, kind, pair);
                }
                if paranoia >= 2
                    && let Some(host) = remote_host(value)
                    && own_host.as_deref() != Some(host.as_str())
                {
                    acc.add(Category::RfiSsrf, "rfi-offsite-url", 3, kind, pair);
                }
            }
            // The same parameter twice (paranoia 3): frameworks disagree on which one counts.
            if paranoia >= 3 && !name.ends_with("[]") && !name.ends_with("%5B%5D") {
                if names.contains(&name) {
                    acc.add(P, "proto-duplicate-parameter", 3, kind, name);
                }
                names.push(name);
            }
        }
    }
    if count > 255 {
        acc.add(
            P,
            "proto-many-parameters",
            3,
            "query",
            "more than 255 parameters",
        );
    }
}

/// A parameter name that says "a file or directory to load" (`mosConfig_absolute_path`,
/// `_CONF[path]`, `include`, `template`): a URL there is remote file inclusion.
fn include_name(lower: &str) -> bool {
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|w| w.split('_'))
        .any(|w| {
            matches!(
                w,
                "path"
                    | "dir"
                    | "basedir"
                    | "include"
                    | "inc"
                    | "require"
                    | "template"
                    | "tpl"
                    | "module"
                    | "lib"
                    | "conf"
                    | "config"
                    | "root"
                    | "absolute"
            ) || w.ends_with("path")
                || w.ends_with("dir")
        })
}

/// A parameter value (still percent-encoded) that is an http(s) or ftp URL.
fn remote_url(value: &str) -> bool {
    remote_host(value).is_some()
}

/// The host (with port) of a parameter value that is an http(s) or ftp URL.
fn remote_host(value: &str) -> Option<String> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.replace("%3a", ":").replace("%2f", "/");
    let rest = ["http://", "https://", "ftp://", "ftps://"]
        .iter()
        .find_map(|s| lower.strip_prefix(s))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.to_owned())
}

/// `s` without trailing line breaks, raw or percent-encoded.
fn trim_line_ends(mut s: &str) -> &str {
    loop {
        let t = s.trim_end_matches(['\r', '\n']);
        let lower_end = t.len().checked_sub(3).and_then(|i| t.get(i..));
        match lower_end {
            Some(e) if e.eq_ignore_ascii_case("%0a") || e.eq_ignore_ascii_case("%0d") => {
                s = &t[..t.len() - 3];
            }
            _ => return t,
        }
    }
}

/// The offset of the first `%` that starts no valid escape (`%41`, or IIS's `%u0041`).
fn bad_escape(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(pos) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + pos;
        let hex = |k: usize| b.get(at + k).is_some_and(u8::is_ascii_hexdigit);
        let iis = matches!(b.get(at + 1), Some(b'u' | b'U')) && (2..6).all(hex);
        if !(iis || (hex(1) && hex(2))) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}
