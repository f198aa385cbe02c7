//! The page guard answers a refused request with: a small HTML page, or JSON when the client
//! asks for it (`Accept`), carrying the request id that is also in the log record (and in the
//! `X-Request-Id` header). It says what happened, never why: the reason is in the log.
use bytes::Bytes;
use http::header::{self, HeaderValue};

/// The header that carries the request id, on every answer of the inline mode.
pub const REQUEST_ID: &str = "x-request-id";
/// The `application/problem+json` body of a spent quota's answer, as one header, whatever the
/// client accepts: nginx's `auth_request` drops the body of guard's answer, so the snippet
/// (`dist/nginx-guard-auth.conf`) answers the client with this. The reverse proxy removes it.
pub const GUARD_PROBLEM: &str = "x-guard-problem";

/// The RFC 9457 problem of a spent quota: the exceeded policies by name.
#[must_use]
pub fn problem(status: u16, id: &str, violated: &[&'static str]) -> String {
    serde_json::json!({
        "type": "about:blank",
        "title": title(status),
        "status": status,
        "detail": format!("quota exceeded: {}", violated.join(", ")),
        "violated_policies": violated,
        "request_id": id,
    })
    .to_string()
}

/// What an answer says beyond its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// Further headers (the quotas' `RateLimit` and `RateLimit-Policy`).
    pub headers: Vec<(&'static str, String)>,
    /// A spent plan quota: the exceeded policies' names. A client preferring JSON then gets an
    /// `application/problem+json` body (RFC 9457) naming them.
    pub violated: Option<Vec<&'static str>>,
}

/// Whether `accept` prefers JSON to HTML: the first media range (in order of its `q`, then of
/// position) that names either decides; HTML when none does.
#[must_use]
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let mut ranges: Vec<(u32, usize, bool)> = Vec::new();
    for (i, item) in accept.split(',').enumerate().take(32) {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let json = media == "application/json" || media.ends_with("+json");
        let html = media == "text/html" || media == "application/xhtml+xml";
        if json || html {
            ranges.push(((q.clamp(0.0, 1.0) * 1000.0) as u32, i, json));
        }
    }
    ranges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().is_some_and(|r| r.2)
}

/// The reason phrase of `status` for the page's title.
fn title(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Refused")
}

/// The answer to a refused request: `status`, the page (HTML or JSON as `accept` prefers),
/// `X-Request-Id: id`, `Cache-Control: no-store`, and `extra`'s headers.
#[must_use]
pub fn answer(
    status: u16,
    id: &str,
    accept: Option<&HeaderValue>,
    extra: &Extra,
) -> http::Response<Bytes> {
    let json = wants_json(accept);
    let reason = title(status);
    // The id is guard's own (hex): nothing in the page comes from the request.
    let problem = extra.violated.as_ref().map(|v| problem(status, id, v));
    let (body, content_type) = if let (true, Some(p)) = (json, &problem) {
        (p.clone(), "application/problem+json")
    } else if json {
        let v = serde_json::json!({
            "status": status,
            "error": reason.to_ascii_lowercase(),
            "request_id": id,
        });
        (v.to_string(), "application/json")
    } else {
        (
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n\
                 <body><h1>{status} {reason}</h1>\n<p>This request was refused.</p>\n\
                 <p>Request id: <code>{id}</code></p></body></html>\n"
            ),
            "text/html; charset=utf-8",
        )
    };
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FORBIDDEN);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(REQUEST_ID, v);
    }
    if let Some(secs) = extra.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    for (name, value) in &extra.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.append(*name, v);
        }
    }
    // Policy names and the id are guard's own: always a valid header value.
    if let Some(v) = problem.and_then(|p| HeaderValue::try_from(p).ok()) {
        h.insert(GUARD_PROBLEM, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn accept_chooses_json_or_html() {
        assert!(!wants_json(None));
        assert!(wants_json(Some(&accept("application/json"))));
        assert!(wants_json(Some(&accept("application/problem+json"))));
        assert!(!wants_json(Some(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ))));
        assert!(wants_json(Some(&accept(
            "text/html;q=0.5, application/json"
        ))));
        assert!(!wants_json(Some(&accept(
            "application/json;q=0, text/html"
        ))));
        assert!(!wants_json(Some(&accept("*/*"))));
        assert!(!wants_json(Some(
            &HeaderValue::from_bytes(b"\xff").unwrap()
        )));
    }

    #[test]
    fn html_page_carries_status_and_request_id() {
        let r = answer(403, "0123abcd", None, &Extra::default());
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[REQUEST_ID], "0123abcd");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = std::str::from_utf8(r.body()).unwrap();
        assert!(body.contains("403 Forbidden"), "{body}");
        assert!(body.contains("<code>0123abcd</code>"), "{body}");
    }

    #[test]
    fn json_answer_with_retry_after_and_extra_headers() {
        let extra = Extra {
            retry_after: Some(30),
            headers: vec![("ratelimit", "limit=10, remaining=0, reset=30".into())],
            violated: None,
        };
        let r = answer(429, "feed", Some(&accept("application/json")), &extra);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        assert_eq!(r.headers()["ratelimit"], "limit=10, remaining=0, reset=30");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["error"], "too many requests");
        assert_eq!(v["request_id"], "feed");
    }

    #[test]
    fn a_spent_quota_answers_problem_json_or_the_html_page() {
        let extra = Extra {
            retry_after: Some(17),
            headers: vec![
                ("ratelimit-policy", "\"minute\";q=5;w=60".into()),
                ("ratelimit", "\"minute\";r=0;t=17".into()),
            ],
            violated: Some(vec!["minute"]),
        };
        let r = answer(429, "beef", Some(&accept("application/json")), &extra);
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(r.headers()["ratelimit-policy"], "\"minute\";q=5;w=60");
        assert_eq!(r.headers()["ratelimit"], "\"minute\";r=0;t=17");
        assert_eq!(r.headers()[header::RETRY_AFTER], "17");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(v["violated_policies"], serde_json::json!(["minute"]));
        assert_eq!(v["detail"], "quota exceeded: minute");
        assert_eq!(v["request_id"], "beef");
        let html = answer(429, "beef", None, &extra);
        assert!(
            html.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(html.headers()[header::RETRY_AFTER], "17");
        assert!(
            std::str::from_utf8(html.body())
                .unwrap()
                .contains("429 Too Many Requests")
        );
        // The problem rides along in X-Guard-Problem for forward-auth, whatever was accepted.
        for r in [&r, &html] {
            assert_eq!(r.headers()[GUARD_PROBLEM].as_bytes(), r#"{"detail":"quota exceeded: minute","request_id":"beef","status":429,"title":"Too Many Requests","type":"about:blank","violated_policies":["minute"]}"#.as_bytes());
        }
        let plain = answer(403, "beef", None, &Extra::default());
        assert!(plain.headers().get(GUARD_PROBLEM).is_none());
    }

    #[test]
    fn an_unknown_status_still_answers() {
        let r = answer(499, "x", None, &Extra::default());
        assert_eq!(r.status(), 499);
        assert!(
            std::str::from_utf8(r.body())
                .unwrap()
                .contains("499 Refused")
        );
    }
}
