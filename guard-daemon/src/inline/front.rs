//! The forward-auth endpoint's front ends: how nginx `auth_request`, Traefik `ForwardAuth` and
//! Envoy's HTTP `ext_authz` describe the request they ask about, turned back into that request's
//! head (method, URI, headers) for the decision. Only the head: none of them sends the body.
//!
//! - **nginx** (`X-Original-URI`, `X-Original-Method`, set by the `dist/nginx-guard-auth.conf`
//!   snippet): the subrequest carries the client's own headers (`proxy_pass_request_headers`).
//! - **Traefik** (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For`): the client's headers
//!   come with it.
//! - **Envoy** (anything else): the auth request *is* the original request line and headers
//!   (configure no `path_prefix`).
//!
//! In all three the client comes from the forwarding header the front end sets
//! (`X-Forwarded-For`, or nginx's `X-Real-IP` without one), believed only when the peer — the
//! front end — is in `tap.trusted_proxies`.
use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri};

/// Which front end asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Nginx,
    Traefik,
    Envoy,
}

impl FrontEnd {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Traefik => "traefik",
            Self::Envoy => "envoy",
        }
    }
}

/// Why the original request could not be rebuilt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrontError {
    #[error("{header} is not a request target")]
    Uri { header: &'static str },
    #[error("{header} is not a method")]
    Method { header: &'static str },
}

const X_ORIGINAL_URI: &str = "x-original-uri";
const X_ORIGINAL_METHOD: &str = "x-original-method";
const X_FORWARDED_URI: &str = "x-forwarded-uri";
const X_FORWARDED_METHOD: &str = "x-forwarded-method";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The headers a front end adds to describe the request, removed from the rebuilt request
/// (the client did not send them; the forwarding chain itself stays, as the tap sees it).
const DESCRIPTIVE: [&str; 6] = [
    X_ORIGINAL_URI,
    X_ORIGINAL_METHOD,
    X_FORWARDED_URI,
    X_FORWARDED_METHOD,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
];

/// Which front end sent `headers`.
#[must_use]
pub fn front_end(headers: &HeaderMap) -> FrontEnd {
    if headers.contains_key(X_ORIGINAL_URI) {
        FrontEnd::Nginx
    } else if headers.contains_key(X_FORWARDED_URI) || headers.contains_key(X_FORWARDED_METHOD) {
        FrontEnd::Traefik
    } else {
        FrontEnd::Envoy
    }
}

/// A request target as the client sent it, made acceptable to [`Uri`]: bytes it refuses
/// (`"`, `{`, `|`, spaces, non-ASCII, …) are percent-encoded, which the validator undoes.
fn target(raw: &[u8], header: &'static str) -> Result<Uri, FrontError> {
    let mut s = String::with_capacity(raw.len() + 1);
    // Anything but origin form (`/…`) and absolute form is read as a path, so that no part of
    // it is taken for an authority and lost.
    let absolute = raw.starts_with(b"http://") || raw.starts_with(b"https://");
    if !raw.starts_with(b"/") && !absolute && raw != b"*" {
        s.push('/');
    }
    for &b in raw {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b);
        if keep {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    if s.is_empty() {
        s.push('/');
    }
    Uri::try_from(s).map_err(|_| FrontError::Uri { header })
}

fn method(raw: &HeaderValue, header: &'static str) -> Result<Method, FrontError> {
    Method::from_bytes(raw.as_bytes().trim_ascii()).map_err(|_| FrontError::Method { header })
}

/// The original request's head as `auth` (the forward-auth request's head) describes it, and
/// which front end sent it.
pub fn original(auth: &Parts) -> Result<(FrontEnd, Parts), FrontError> {
    let h = &auth.headers;
    let front = front_end(h);
    let (uri, method_header, host) = match front {
        FrontEnd::Nginx => (
            h.get(X_ORIGINAL_URI)
                .map(|v| target(v.as_bytes(), "X-Original-URI"))
                .transpose()?,
            h.get(X_ORIGINAL_METHOD)
                .map(|v| method(v, "X-Original-Method"))
                .transpose()?,
            None,
        ),
        FrontEnd::Traefik => (
            h.get(X_FORWARDED_URI)
                .map(|v| target(v.as_bytes(), "X-Forwarded-Uri"))
                .transpose()?,
            h.get(X_FORWARDED_METHOD)
                .map(|v| method(v, "X-Forwarded-Method"))
                .transpose()?,
            h.get(X_FORWARDED_HOST).cloned(),
        ),
        FrontEnd::Envoy => (None, None, None),
    };
    let mut request = http::Request::new(());
    *request.method_mut() = method_header.unwrap_or_else(|| auth.method.clone());
    *request.uri_mut() = uri.unwrap_or_else(|| auth.uri.clone());
    *request.version_mut() = auth.version;
    let mut headers = HeaderMap::with_capacity(h.len());
    for (name, value) in h {
        if !DESCRIPTIVE.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    Ok((front, parts))
}

/// The header that carries the refusal's real status when the front end cannot pass it on.
pub const GUARD_STATUS: HeaderName = HeaderName::from_static("x-guard-status");

/// The status a front end can pass on: nginx `auth_request` turns anything but 2xx, 401 and
/// 403 into a 500, so refusals go to it as 403 with the real status in [`GUARD_STATUS`] (the
/// snippet answers 429 from it); Traefik and Envoy pass any status on.
#[must_use]
pub fn status_for(front: FrontEnd, status: u16) -> u16 {
    match front {
        FrontEnd::Nginx if !matches!(status, 200..=299 | 401 | 403) => 403,
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn nginx_auth_request() {
        let auth = parts(
            "GET",
            "/auth",
            &[
                ("x-original-uri", b"/items?id=1' OR '1'='1"),
                ("x-original-method", b"POST"),
                ("x-forwarded-for", b"203.0.113.9"),
                ("host", b"shop.example"),
                ("user-agent", b"curl/8"),
            ],
        );
        let (front, p) = original(&auth).unwrap();
        assert_eq!(front, FrontEnd::Nginx);
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.uri.path(), "/items");
        assert_eq!(p.uri.query(), Some("id=1'%20OR%20'1'='1"));
        assert_eq!(p.headers["host"], "shop.example");
        assert_eq!(p.headers["x-forwarded-for"], "203.0.113.9");
        assert!(!p.headers.contains_key("x-original-uri"));
        assert!(!p.headers.contains_key("x-original-method"));
    }

    #[test]
    fn nginx_without_a_method_keeps_the_subrequests() {
        let auth = parts("HEAD", "/auth", &[("x-original-uri", b"/")]);
        let (_, p) = original(&auth).unwrap();
        assert_eq!(p.method, Method::HEAD);
        assert_eq!(p.uri, "/");
    }

    #[test]
    fn traefik_forward_auth() {
        let auth = parts(
            "GET",
            "/",
            &[
                ("x-forwarded-method", b"DELETE"),
                ("x-forwarded-proto", b"https"),
                ("x-forwarded-host", b"api.example"),
                ("x-forwarded-uri", b"/v1/users/7?x=<script>"),
                ("x-forwarded-for", b"198.51.100.4"),
                ("host", b"guard:9180"),
            ],
        );
        let (front, p) = original(&auth).unwrap();
        assert_eq!(front, FrontEnd::Traefik);
        assert_eq!(p.method, Method::DELETE);
        assert_eq!(p.uri.path(), "/v1/users/7");
        assert_eq!(p.uri.query(), Some("x=%3Cscript%3E"));
        assert_eq!(p.headers["host"], "api.example");
        assert_eq!(p.headers["x-forwarded-for"], "198.51.100.4");
        for gone in DESCRIPTIVE {
            assert!(!p.headers.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn envoy_ext_authz_is_the_request_itself() {
        let auth = parts(
            "PUT",
            "/files/a.txt?v=2",
            &[("x-forwarded-for", b"192.0.2.1"), ("host", b"files")],
        );
        let (front, p) = original(&auth).unwrap();
        assert_eq!(front, FrontEnd::Envoy);
        assert_eq!(p.method, Method::PUT);
        assert_eq!(p.uri, "/files/a.txt?v=2");
        assert_eq!(p.headers["host"], "files");
    }

    #[test]
    fn unreadable_descriptions_are_errors_not_panics() {
        let auth = parts(
            "GET",
            "/",
            &[("x-original-method", b"G E T"), ("x-original-uri", b"/")],
        );
        assert_eq!(
            original(&auth).unwrap_err(),
            FrontError::Method {
                header: "X-Original-Method"
            }
        );
        // Any bytes in a target are carried (encoded), never refused or panicked on.
        let auth = parts("GET", "/", &[("x-original-uri", b"/\xff\"{}|\\^` x")]);
        let (_, p) = original(&auth).unwrap();
        assert_eq!(p.uri.path(), "/%FF%22%7B%7D%7C%5C%5E%60%20x");
        let auth = parts("GET", "/", &[("x-original-uri", b"")]);
        assert_eq!(original(&auth).unwrap().1.uri, "/");
    }

    #[test]
    fn nginx_gets_403_for_statuses_it_cannot_pass() {
        assert_eq!(status_for(FrontEnd::Nginx, 429), 403);
        assert_eq!(status_for(FrontEnd::Nginx, 403), 403);
        assert_eq!(status_for(FrontEnd::Nginx, 200), 200);
        assert_eq!(status_for(FrontEnd::Traefik, 429), 429);
        assert_eq!(status_for(FrontEnd::Envoy, 451), 451);
    }
}

#[cfg(test)]
mod odd_targets {
    use super::*;

    #[test]
    fn odd_but_possible_targets_are_carried() {
        for (raw, path, query) in [
            ("/a%zz", "/a%zz", None),
            ("/a?b=%", "/a", Some("b=%")),
            ("//double//slash", "//double//slash", None),
            ("/a#frag", "/a%23frag", None),
            ("/?", "/", Some("")),
            ("/a?b=1?c=2", "/a", Some("b=1?c=2")),
            ("abc?x=1", "/abc", Some("x=1")),
            ("evil.example:80/x?y", "/evil.example:80/x", Some("y")),
            ("http://h.test/p?q=1", "/p", Some("q=1")),
        ] {
            let uri =
                target(raw.as_bytes(), "X-Original-URI").unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(uri.path(), path, "{raw}");
            assert_eq!(uri.query(), query, "{raw}");
        }
    }
}
