//! Header rewriting between the client and the upstream: hop-by-hop headers removed (RFC 9110
//! §7.6.1: `Connection` and every header it names, plus the fixed list), and the forwarding
//! headers the upstream reads the client from (`X-Forwarded-For` appended to, `Forwarded` and
//! `X-Forwarded-Proto` set).
use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers that are removed whether or not `Connection` names them.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `Connection` (any of its lines) names `token`, case-insensitively.
fn connection_names(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header), as a WebSocket handshake does.
#[must_use]
pub fn wants_upgrade(version: http::Version, headers: &HeaderMap) -> bool {
    version == http::Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_names(headers, "upgrade")
}

/// Removes the hop-by-hop headers. With `keep_upgrade`, `Upgrade` survives and `Connection`
/// becomes exactly `upgrade`, so the upstream sees the handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none: one pass over the names, no lookups.
    if !headers.keys().any(|n| HOP_BY_HOP.contains(&n.as_str())) {
        return;
    }
    // The headers `Connection` names; names that are not valid header names are ignored.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && name == "upgrade" {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `X-Forwarded-For` gets the peer appended (after any values the client sent, joined into one
/// line); `X-Forwarded-Proto` and `Forwarded` are replaced with what guard saw.
pub fn add_forwarding(headers: &mut HeaderMap, peer: IpAddr, tls: bool, host: Option<&str>) {
    let peer = canonical(peer);
    let mut xff = String::new();
    for v in headers.get_all("x-forwarded-for") {
        if let Ok(v) = v.to_str() {
            let v = v.trim();
            if !v.is_empty() {
                xff.push_str(v);
                xff.push_str(", ");
            }
        }
    }
    let _ = write!(xff, "{peer}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    let mut fwd = match peer {
        IpAddr::V4(a) => format!("for={a}"),
        IpAddr::V6(a) => format!("for=\"[{a}]\""),
    };
    // A host that would need quoting beyond a plain token is left out rather than escaped.
    if let Some(h) = host.filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    }) {
        let _ = write!(fwd, ";host=\"{h}\"");
    }
    let _ = write!(fwd, ";proto={proto}");
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert(header::FORWARDED, v);
    }
}

/// An IPv4-mapped IPv6 peer (a dual-stack listener) is named as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_says_connection_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade, x-drop"),
            ("upgrade", "websocket"),
            ("x-drop", "1"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(wants_upgrade(http::Version::HTTP_11, &h));
        assert!(!wants_upgrade(http::Version::HTTP_10, &h));
        assert!(!wants_upgrade(http::Version::HTTP_2, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-drop").is_none());
        assert!(h.get("sec-websocket-key").is_some());
        assert!(!wants_upgrade(
            http::Version::HTTP_11,
            &map(&[("upgrade", "websocket")])
        ));
    }

    #[test]
    fn forwarding_headers_append_and_set() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarding(
            &mut h,
            "10.0.0.7".parse().unwrap(),
            false,
            Some("app.example:8080"),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.1, 10.0.0.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.7;host=\"app.example:8080\";proto=http"
        );

        let mut h = HeaderMap::new();
        add_forwarding(
            &mut h,
            "::ffff:192.0.2.1".parse().unwrap(),
            true,
            Some("a\"b"),
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["forwarded"], "for=192.0.2.1;proto=https");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, "2001:db8::1".parse().unwrap(), true, None);
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=https");
    }
}
