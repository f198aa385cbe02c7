//! Extraction: split a request into the named values an attacker controls.
//!
//! Each value is inspected where it lives so that a finding can say `query:id` or
//! `json:$.user.name` rather than "somewhere in the request": query and form parameters (names
//! too, when they are not plain identifiers), JSON bodies walked to every string and key,
//! multipart fields (file contents skipped, file names kept), cookies, Authorization credentials
//! (Basic decoded), the headers attackers use, and the path itself. Everything is bounded by
//! [`Limits`].

use std::borrow::Cow;
use std::fmt::Write as _;

use super::Request;
use crate::text::truncate;

/// Bounds and switches for one extraction.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_value_bytes: usize,
    pub max_values: usize,
    pub skip_body: bool,
    pub skip_query: bool,
}

/// Where a value came from, which changes how it is decoded and which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The URL path.
    Path,
    /// A query or form parameter (`+` is a space).
    Param,
    /// A header or a cookie.
    Header,
    /// A whole XML body: tags are expected there.
    Markup,
    /// A cookie, JSON string, multipart field or raw body.
    Other,
    /// A header whose value is a URL by design (Referer, Origin): no SSRF/RFI rules.
    UrlHeader,
}

/// One value to inspect.
#[derive(Debug)]
pub struct Item<'a> {
    /// `query:id`, `json:$.a[0]`, `header:User-Agent`, …
    pub field: String,
    /// The value as found (still encoded).
    pub value: Cow<'a, str>,
    /// How to decode it and which rules apply.
    pub origin: Origin,
}

/// Headers whose values are structural (negotiation, caching, credentials) and are not
/// inspected as free text. Protocol checks still look at some of them.
const SKIP_HEADERS: &[&str] = &[
    "host",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "proxy-authorization",
    "connection",
    "content-length",
    "cache-control",
    "pragma",
    "if-modified-since",
    "if-none-match",
    "if-match",
    "if-unmodified-since",
    "keep-alive",
    "proxy-connection",
    "upgrade-insecure-requests",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "dnt",
    "te",
    "range",
    "priority",
];

/// Splits `req` into values, at most `limits.max_values` of them.
pub fn extract<'a>(req: &Request<'a>, limits: &Limits) -> Vec<Item<'a>> {
    let mut out = Out {
        items: Vec::new(),
        limits: *limits,
    };
    if !req.path.is_empty() && req.path != "/" {
        out.push("path".to_owned(), Cow::Borrowed(req.path), Origin::Path);
    }
    if !limits.skip_query {
        params(&mut out, "query", req.query);
    }
    for &(name, value) in req.headers {
        if name.eq_ignore_ascii_case("cookie") {
            cookies(&mut out, value);
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization(&mut out, value);
        } else if name.eq_ignore_ascii_case("referer") || name.eq_ignore_ascii_case("origin") {
            out.push(
                format!("header:{name}"),
                Cow::Borrowed(value),
                Origin::UrlHeader,
            );
        } else if !SKIP_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            out.push(
                format!("header:{name}"),
                Cow::Borrowed(value),
                Origin::Header,
            );
        }
    }
    if !limits.skip_body && !req.body.is_empty() {
        body(&mut out, req);
    }
    out.items
}

struct Out<'a> {
    items: Vec<Item<'a>>,
    limits: Limits,
}

impl<'a> Out<'a> {
    fn push(&mut self, field: String, value: Cow<'a, str>, origin: Origin) {
        if self.items.len() >= self.limits.max_values || value.is_empty() {
            return;
        }
        let value = match value {
            Cow::Borrowed(v) => Cow::Borrowed(truncate(v, self.limits.max_value_bytes)),
            Cow::Owned(v) if v.len() > self.limits.max_value_bytes => {
                Cow::Owned(truncate(&v, self.limits.max_value_bytes).to_owned())
            }
            owned @ Cow::Owned(_) => owned,
        };
        self.items.push(Item {
            field,
            value,
            origin,
        });
    }
}

/// A name not worth inspecting on its own: short and made of lower-case letters and digits only
/// (attackers put payloads in names too, and SQL or Java identifiers carry `_` and `.`).
fn plain_name(name: &str) -> bool {
    name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A short, readable label for a field name: percent-escapes kept, length bounded.
fn label(name: &str) -> &str {
    truncate(name, 64)
}

fn params<'a>(out: &mut Out<'a>, kind: &str, s: &'a str) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !value.is_empty() {
            out.push(
                format!("{kind}:{}", label(name)),
                Cow::Borrowed(value),
                Origin::Param,
            );
        }
        if !name.is_empty() {
            out.push(
                format!("{kind}-name:{}", label(name)),
                Cow::Borrowed(name),
                Origin::Param,
            );
        }
    }
}

fn cookies<'a>(out: &mut Out<'a>, header: &'a str) {
    for pair in header.split(';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !value.is_empty() {
            out.push(
                format!("cookie:{}", label(name)),
                Cow::Borrowed(value),
                Origin::Header,
            );
        }
        if !plain_name(name) {
            out.push(
                format!("cookie-name:{}", label(name)),
                Cow::Borrowed(name),
                Origin::Other,
            );
        }
    }
}

/// The credentials of an `Authorization` header: Basic's user name and password decoded, any
/// other scheme's token as sent (a JWT's parts are decoded by the base64 scan).
fn authorization<'a>(out: &mut Out<'a>, value: &'a str) {
    let value = value.trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or(("", value));
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = crate::text::base64_decode(credentials.trim());
        let text = String::from_utf8_lossy(&decoded).into_owned();
        let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
        out.push(
            "authorization:user".to_owned(),
            Cow::Owned(user.to_owned()),
            Origin::Other,
        );
        out.push(
            "authorization:password".to_owned(),
            Cow::Owned(password.to_owned()),
            Origin::Other,
        );
    } else {
        out.push(
            "header:Authorization".to_owned(),
            Cow::Borrowed(credentials.trim()),
            Origin::Other,
        );
    }
}

fn body<'a>(out: &mut Out<'a>, req: &Request<'a>) {
    let raw = &req.body[..req.body.len().min(out.limits.max_body_bytes)];
    let text: Cow<'a, str> = String::from_utf8_lossy(raw);
    let ct = req.content_type.unwrap_or("").to_ascii_lowercase();
    let trimmed = text.trim_start();
    if ct.contains("multipart/") {
        if let Some(boundary) = boundary(req.content_type.unwrap_or("")) {
            multipart(out, &text, &boundary);
            return;
        }
    } else if (ct.contains("json") || trimmed.starts_with(['{', '[']))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let mut path = String::from("$");
        json(out, &v, &mut path, 0);
        return;
    } else if ct.contains("x-www-form-urlencoded")
        || (ct.is_empty() && text.contains('=') && !trimmed.starts_with(['<', '{', '[']))
    {
        match text {
            Cow::Borrowed(t) => params(out, "form", t),
            Cow::Owned(t) => {
                // Invalid UTF-8 was replaced: the values are owned copies.
                let mut tmp = Out {
                    items: Vec::new(),
                    limits: out.limits,
                };
                params(&mut tmp, "form", &t);
                for it in tmp.items {
                    out.push(it.field, Cow::Owned(it.value.into_owned()), it.origin);
                }
            }
        }
        return;
    }
    let origin = if trimmed.starts_with('<') {
        xml(out, trimmed);
        Origin::Markup
    } else {
        Origin::Other
    };
    out.push("body".to_owned(), text, origin);
}

/// Pulls attribute values and text nodes out of an XML (or HTML) body, so that each is
/// inspected on its own as well as within the whole body.
fn xml(out: &mut Out<'_>, body: &str) {
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        let text = rest[..lt].trim();
        if !text.is_empty() {
            out.push(
                "xml:text".to_owned(),
                Cow::Owned(text.to_owned()),
                Origin::Other,
            );
        }
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        let mut attrs = tag;
        while let Some(eq) = attrs.find("=\"") {
            let name = attrs[..eq].rsplit([' ', '\t', '\n']).next().unwrap_or("");
            let after = &attrs[eq + 2..];
            let Some(end) = after.find('"') else {
                break;
            };
            out.push(
                format!("xml:@{}", label(name)),
                Cow::Owned(after[..end].to_owned()),
                Origin::Other,
            );
            attrs = &after[end + 1..];
        }
        rest = &rest[lt + gt + 1..];
    }
}

/// Walks a JSON value to every string and every non-trivial key. Depth is bounded by
/// `serde_json`'s own recursion limit (128); the path label is bounded here.
fn json(out: &mut Out<'_>, v: &serde_json::Value, path: &mut String, depth: usize) {
    use serde_json::Value;
    if out.items.len() >= out.limits.max_values {
        return;
    }
    let len = path.len();
    match v {
        Value::String(s) => out.push(format!("json:{path}"), Cow::Owned(s.clone()), Origin::Other),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if depth < 16 {
                    let _ = write!(path, "[{i}]");
                }
                json(out, x, path, depth + 1);
                path.truncate(len);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                if depth < 16 {
                    path.push('.');
                    path.push_str(label(k));
                }
                if !plain_name(k) {
                    out.push(
                        format!("json-key:{path}"),
                        Cow::Owned(k.clone()),
                        Origin::Other,
                    );
                }
                json(out, x, path, depth + 1);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The `boundary=` parameter of a multipart Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    let at = lower.find("boundary=")? + "boundary=".len();
    let rest = &content_type[at..];
    let b = rest.strip_prefix('"').map_or_else(
        || rest.split([';', ',', ' ']).next(),
        |q| q.split('"').next(),
    )?;
    (!b.is_empty()).then(|| b.to_owned())
}

/// Splits a multipart body into fields; file contents are skipped, file names kept.
fn multipart(out: &mut Out<'_>, body: &str, boundary: &str) {
    let delim = format!("--{boundary}");
    for part in body.split(delim.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part
            .strip_prefix("\r\n")
            .or_else(|| part.strip_prefix('\n'))
            .unwrap_or(part);
        let (head, content) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))
            .unwrap_or((part, ""));
        let content = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(content);
        let name = disposition_param(head, "name").unwrap_or_default();
        let filename = disposition_param(head, "filename");
        if let Some(f) = filename {
            out.push(
                format!("multipart-filename:{name}"),
                Cow::Owned(f),
                Origin::Other,
            );
        } else {
            out.push(
                format!("multipart:{name}"),
                Cow::Owned(content.to_owned()),
                Origin::Other,
            );
        }
        if !plain_name(&name) {
            out.push(
                format!("multipart-name:{name}"),
                Cow::Owned(name.clone()),
                Origin::Other,
            );
        }
    }
}

/// One parameter (`name="x"`) of a part's Content-Disposition header.
fn disposition_param(head: &str, param: &str) -> Option<String> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
    let lower = line.to_ascii_lowercase();
    let needle = format!("{param}=");
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let at = from + pos;
        let before = lower[..at].chars().last();
        if before.is_none_or(|c| c == ' ' || c == ';') {
            let rest = &line[at + needle.len()..];
            let v = rest
                .strip_prefix('"')
                .map_or_else(|| rest.split(';').next(), |q| q.split('"').next())
                .unwrap_or("");
            return Some(label(v.trim()).to_owned());
        }
        from = at + needle.len();
    }
    None
}
