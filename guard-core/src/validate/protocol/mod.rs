//! Request-level protocol checks: what is wrong with the request's shape rather than with one
//! value — methods outside the allowed list, request-smuggling header combinations, abusive Range
//! headers, charsets used to hide payloads (UTF-7), and session identifiers planted from another
//! site (session fixation). The request line and header syntax checks are in [`headers`].

mod headers;

use super::detect::Accumulator;
use super::{Category, Request, ValidatorConfig};
use crate::text::truncate;
use headers::{KNOWN_CHARSETS, header};

/// Query parameters that carry a session identifier.
const SESSION_PARAMS: &[&str] = &[
    "jsessionid",
    "phpsessid",
    "aspsessionid",
    "asp.net_sessionid",
    "sessionid",
    "session_id",
    "sessid",
    "sid",
    "jservsession",
    "cfid",
    "cftoken",
    "cakephp",
    "laravel_session",
    "_rails_session",
    "connect.sid",
    "_session_id",
];

/// Runs every request-level check.
pub fn check(req: &Request<'_>, config: &ValidatorConfig, acc: &mut Accumulator) {
    let p = Category::Protocol;
    if !config
        .allowed_methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(req.method))
    {
        acc.add(p, "proto-method", 5, "method", req.method);
    }
    let header = |name: &str| header(req, name);
    headers::version(req.version, acc);
    headers::target(req, acc);
    if let Some(c) = header("connection") {
        headers::connection(c, acc);
    }
    headers::restricted(req, config.paranoia, acc);
    headers::accept(req, config.paranoia, acc);
    if let Some(ct) = req.content_type {
        headers::content_type_syntax(ct, acc);
    }
    headers::cookie_version(req, acc);
    headers::parameters(req, config.max_body_bytes, config.paranoia, acc);
    headers::body_type(req, config.paranoia, acc);
    headers::cache_control(req, config.paranoia, acc);
    if let Some(cl) = header("content-length")
        && (cl.trim().is_empty() || !cl.trim().bytes().all(|b| b.is_ascii_digit()))
    {
        acc.add(p, "proto-content-length", 5, "header:Content-Length", cl);
    }
    if let Some(te) = header("transfer-encoding") {
        if header("content-length").is_some() {
            acc.add(p, "proto-smuggling", 5, "header:Transfer-Encoding", te);
        } else if !matches!(
            te.trim().to_ascii_lowercase().as_str(),
            "chunked" | "identity"
        ) {
            acc.add(
                p,
                "proto-transfer-encoding",
                4,
                "header:Transfer-Encoding",
                te,
            );
        }
    }
    content_type(req, config, header("transfer-encoding"), acc);
    host(header("host"), acc);
    if req.path.contains('#') {
        // Browsers never send the fragment.
        acc.add(p, "proto-fragment-in-path", 3, "path", req.path);
    }
    if let Some(rr) = header("request-range") {
        // Obsolete since HTTP/1.1; only range-abuse tools still send it.
        acc.add(p, "proto-request-range", 4, "header:Request-Range", rr);
    }
    method_override(req, &header, acc);
    for (name, field) in [
        ("range", "header:Range"),
        ("request-range", "header:Request-Range"),
    ] {
        if let Some(range) = header(name) {
            headers::range(range, field, acc);
        }
    }
    charset(req, acc);
    session_fixation(req, header("referer"), header("host"), acc);
}

/// Body bytes the checks here look at.
const SCANNED_BODY: usize = 8192;

/// The body's first `limit` bytes as text when the content type contains `kind` (lower case);
/// "" for another type or bytes that are not UTF-8.
fn body_text<'a>(req: &Request<'a>, kind: &str, limit: usize) -> &'a str {
    if req
        .content_type
        .is_some_and(|c| c.to_ascii_lowercase().contains(kind))
    {
        std::str::from_utf8(&req.body[..req.body.len().min(limit)]).unwrap_or("")
    } else {
        ""
    }
}

/// Method overrides (`_method=`, `X-HTTP-Method-Override`) smuggle a method past method checks.
fn method_override<'a>(
    req: &Request<'a>,
    header: &dyn Fn(&str) -> Option<&'a str>,
    acc: &mut Accumulator,
) {
    let body = body_text(req, "x-www-form-urlencoded", SCANNED_BODY);
    let from_query = req
        .query
        .split('&')
        .find_map(|p| p.strip_prefix("_method="))
        .map(|m| ("query:_method", m))
        .or_else(|| {
            body.split('&')
                .find_map(|p| p.strip_prefix("_method="))
                .map(|m| ("form:_method", m))
        });
    let from_header = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .find_map(|h| header(h).map(|m| ("header:X-HTTP-Method-Override", m)));
    if let Some((field, m)) = from_query.or(from_header) {
        let dangerous = ["trace", "track", "connect", "debug"]
            .iter()
            .any(|d| d.eq_ignore_ascii_case(m.trim()));
        let weight = if dangerous { 5 } else { 3 };
        acc.add(
            Category::Protocol,
            "proto-method-override",
            weight,
            field,
            m,
        );
    }
}

/// Bodies where none belongs (GET, HEAD) and media types the application does not accept.
fn content_type(
    req: &Request<'_>,
    config: &ValidatorConfig,
    transfer_encoding: Option<&str>,
    acc: &mut Accumulator,
) {
    let bodyless = ["GET", "HEAD"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(req.method));
    if bodyless && (!req.body.is_empty() || transfer_encoding.is_some()) {
        acc.add(
            Category::Protocol,
            "proto-body-without-method",
            4,
            "body",
            req.method,
        );
    }
    if req.body.is_empty() {
        return;
    }
    let Some(ct) = req.content_type else {
        return;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let allowed = media.ends_with("+json")
        || media.ends_with("+xml")
        || config
            .allowed_content_types
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&media));
    if !allowed {
        acc.add(
            Category::Protocol,
            "proto-content-type",
            3,
            "header:Content-Type",
            ct,
        );
    }
}

/// A missing, empty or numeric Host: clients that name the site send its name.
fn host(host: Option<&str>, acc: &mut Accumulator) {
    let p = Category::Protocol;
    match host.map(str::trim) {
        None | Some("") => acc.add(p, "proto-host-missing", 3, "header:Host", ""),
        Some(h) => {
            let name = h.rsplit_once(':').map_or(h, |(n, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    n
                } else {
                    h
                }
            });
            let numeric = name.parse::<std::net::IpAddr>().is_ok()
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok();
            if numeric {
                acc.add(p, "proto-host-ip", 3, "header:Host", h);
            } else if h.bytes().any(|b| b.is_ascii_control() || b == b'%') {
                acc.add(p, "proto-host-invalid", 4, "header:Host", h);
            }
        }
    }
}

/// Charsets that let a payload hide from byte-level inspection.
fn charset(req: &Request<'_>, acc: &mut Accumulator) {
    let bad = |s: &str| {
        let l = s.to_ascii_lowercase();
        [
            "utf-7", "utf7", "utf-32", "ibm037", "ibm500", "cp1026", "cp875",
        ]
        .iter()
        .any(|c| l.contains(&format!("charset={c}")) || l.contains(&format!("charset=\"{c}")))
    };
    if let Some(ct) = req.content_type {
        let lower = ct.to_ascii_lowercase();
        let declared = lower
            .split(';')
            .find_map(|p| p.trim().strip_prefix("charset="))
            .map(|c| c.trim().trim_matches(['"', '\'']));
        let known = declared.is_none_or(|c| KNOWN_CHARSETS.contains(&c));
        if bad(ct) {
            acc.add(
                Category::Protocol,
                "proto-charset",
                5,
                "header:Content-Type",
                ct,
            );
        } else if !known {
            acc.add(
                Category::Protocol,
                "proto-charset",
                4,
                "header:Content-Type",
                ct,
            );
        }
    }
    if req
        .content_type
        .is_some_and(|c| c.to_ascii_lowercase().contains("multipart/"))
    {
        let head = String::from_utf8_lossy(&req.body[..req.body.len().min(64 * 1024)]);
        // Browsers send a `_charset_` field naming the form's charset; only an evasive one counts.
        let lower = head.to_ascii_lowercase();
        let charset_field = lower.find("name=\"_charset_\"").is_some_and(|at| {
            // 120 bytes on, cut back to a character boundary: the body is attacker text.
            let after = truncate(&lower[at..], 120);
            ["utf-7", "utf7", "utf-32", "ibm0", "ibm5", "cp10", "cp87"]
                .iter()
                .any(|c| after.contains(c))
        });
        if bad(&head) || charset_field {
            acc.add(
                Category::Protocol,
                "proto-charset",
                5,
                "body",
                "multipart part charset",
            );
        } else if let Some(c) = part_charsets(&lower).find(|c| !KNOWN_CHARSETS.contains(c)) {
            acc.add(Category::Protocol, "proto-charset", 4, "body", c);
        }
        multipart_names(&head, acc);
    }
}

/// The charsets declared by the `Content-Type` lines of a (lower-cased) multipart body.
fn part_charsets(lower: &str) -> impl Iterator<Item = &str> {
    lower
        .lines()
        .filter(|l| l.starts_with("content-type:"))
        .filter_map(|l| l.split_once("charset="))
        .map(|(_, c)| {
            c.split([';', ' ', ','])
                .next()
                .unwrap_or("")
                .trim_matches(['"', '\''])
        })
}

/// Multipart field and file names with quotes, `;` or `=` inside: parser-confusion evasions.
fn multipart_names(body: &str, acc: &mut Accumulator) {
    for line in body.lines() {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("content-disposition") {
            continue;
        }
        for key in ["name=\"", "filename=\""] {
            let mut from = 0;
            while let Some(pos) = lower[from..].find(key) {
                let start = from + pos + key.len();
                let rest = &line[start..];
                let end = rest.find('"').unwrap_or(rest.len());
                // Character references (`&aring;`) are not separators.
                let value = strip_entities(&rest[..end]);
                // `=` too in a file name: `filename="a=.php"` splits where parsers disagree.
                let separators: &[char] = if key == "filename=\"" {
                    &[';', '\'', '\\', '=']
                } else {
                    &[';', '\'', '\\']
                };
                if value.contains(separators) || rest[end..].starts_with("\"\"") {
                    acc.add(Category::Protocol, "proto-multipart-name", 4, "body", line);
                    return;
                }
                from = start;
            }
        }
    }
}

/// `value` without HTML character references.
fn strip_entities(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let name = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'#')
            .count();
        if name > 0 && after.as_bytes().get(name) == Some(&b';') {
            rest = &after[name + 1..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The object keys of a JSON text: quoted strings followed by `:` (escaped quotes are rare in
/// keys and only cost a missed key).
fn object_keys(json: &str) -> impl Iterator<Item = &str> {
    let mut parts = json.split('"').skip(1);
    std::iter::from_fn(move || {
        loop {
            let candidate = parts.next()?;
            let after = parts.next()?;
            if after.trim_start().starts_with(':') {
                return Some(candidate);
            }
        }
    })
}

/// Whether a parameter name carries a session identifier.
fn session_name(name: &str) -> bool {
    SESSION_PARAMS.contains(&name)
        || name.contains("sess")
        || name.ends_with("sid")
        || name.ends_with("session-token")
        || name.ends_with("session_token")
        || name.ends_with("login_token")
        || name.ends_with("login-token")
}

/// A session identifier in the query string, arriving from another site: session fixation.
fn session_fixation(
    req: &Request<'_>,
    referer: Option<&str>,
    host: Option<&str>,
    acc: &mut Accumulator,
) {
    let body = body_text(req, "x-www-form-urlencoded", SCANNED_BODY);
    // A JSON body's keys, as `"name":` pairs (no full parse for this one check).
    let json_keys = body_text(req, "json", SCANNED_BODY);
    let Some((name, from_query)) = req
        .query
        .split('&')
        .map(|pair| (pair.split('=').next().unwrap_or(""), true))
        .chain(
            body.split('&')
                .map(|pair| (pair.split('=').next().unwrap_or(""), false)),
        )
        .chain(object_keys(json_keys).map(|k| (k, false)))
        .find_map(|(name, from_query)| {
            let name = name.to_ascii_lowercase();
            session_name(&name).then_some((name, from_query))
        })
    else {
        return;
    };
    let ref_host = referer.and_then(|r| r.split("://").nth(1)).map(|r| {
        r.split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    });
    let own = host.map(str::to_ascii_lowercase);
    match ref_host {
        Some(rh) if own.as_deref() != Some(rh.as_str()) => acc.add(
            Category::Protocol,
            "proto-session-fixation",
            5,
            &format!("param:{name}"),
            &format!("session id from {rh}"),
        ),
        // A session id in the URL with no referer at all: a link from a mail or a chat (API
        // clients send session ids in headers or bodies, not in the query).
        None if from_query => acc.add(
            Category::Protocol,
            "proto-session-no-referer",
            3,
            &format!("param:{name}"),
            "session id without a referer",
        ),
        _ => {}
    }
}
