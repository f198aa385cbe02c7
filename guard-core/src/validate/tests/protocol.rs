//! Request-line and header checks, and the paranoia setting, positive and negative.

use super::*;

/// Inspects a request with an explicit protocol version.
fn with_version(version: Option<&str>) -> Verdict {
    validator().inspect(&Request {
        method: "GET",
        version,
        path: "/",
        headers: &[("Host", "shop.example.com"), ("User-Agent", "Mozilla/5.0")],
        ..Request::default()
    })
}

fn get_with(headers: &[(&str, &str)]) -> Verdict {
    let mut all = vec![("User-Agent", "Mozilla/5.0")];
    all.extend_from_slice(headers);
    check(&validator(), "GET", "/", &all, "")
}

#[test]
fn http_versions() {
    assert_blocked(&with_version(Some("")), Category::Protocol);
    assert_fired(&with_version(Some("")), "proto-http09");
    assert_blocked(&with_version(Some("HTTP/4.0")), Category::Protocol);
    assert_blocked(&with_version(Some("JUNK/1.0")), Category::Protocol);
    for ok in ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0"] {
        assert_allowed(&with_version(Some(ok)));
    }
    // A caller that does not know the version is not penalised.
    assert_allowed(&with_version(None));
}

#[test]
fn request_target_must_be_a_path() {
    let v = check(&validator(), "GET", "\\index.html", &[], "");
    assert_flagged(&v, Category::Protocol);
    assert_fired(&v, "proto-request-target");
    assert_not_fired(&get("/index.html"), "proto-request-target");
    assert_not_fired(
        &check(&validator(), "OPTIONS", "*", &[], ""),
        "proto-request-target",
    );
    assert_not_fired(
        &check(&validator(), "GET", "http://shop.example.com/", &[], ""),
        "proto-request-target",
    );
}

#[test]
fn connection_options() {
    assert_fired(
        &get_with(&[("Connection", "keep-alive, close")]),
        "proto-connection",
    );
    assert_fired(
        &get_with(&[("Connection", "close,close")]),
        "proto-connection",
    );
    assert_fired(
        &get_with(&[("Connection", "close, X-Forwarded-For")]),
        "proto-connection-strip",
    );
    assert_allowed(&get_with(&[("Connection", "keep-alive")]));
    assert_allowed(&get_with(&[("Connection", "keep-alive, Upgrade")]));
}

#[test]
fn range_headers() {
    assert_fired(
        &get_with(&[("Range", "bytes=-10,-, 21-30")]),
        "proto-range-syntax",
    );
    assert_fired(&get_with(&[("Range", "bytes=20-10")]), "proto-range-syntax");
    assert_fired(
        &get_with(&[("Range", "bytes=1-10,11-20,21-30,31-40,41-50,51-60")]),
        "proto-range-several",
    );
    assert_allowed(&get_with(&[("Range", "bytes=0-1023")]));
    assert_allowed(&get_with(&[("Range", "bytes=-500")]));
    assert_allowed(&get_with(&[("Range", "bytes=0-99, 200-299")]));
}

#[test]
fn restricted_headers() {
    assert_blocked(
        &get_with(&[("Proxy", "http://evil.example:8080")]),
        Category::Protocol,
    );
    assert_blocked(
        &get_with(&[("X-Middleware-Subrequest", "middleware")]),
        Category::Protocol,
    );
    assert_flagged(
        &get_with(&[("X-Original-URL", "/admin")]),
        Category::Protocol,
    );
    assert_flagged(
        &get_with(&[("Lock-Token", "<opaquelocktoken:x>")]),
        Category::Protocol,
    );
    assert_flagged(
        &get_with(&[("Content-Encoding", "deflate")]),
        Category::Protocol,
    );
    // Content-Encoding with content is how clients send compressed bodies.
    let v = check(
        &validator(),
        "POST",
        "/api",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        "{}",
    );
    assert_not_fired(&v, "proto-content-header-without-content");
    // Accept-Charset only counts at paranoia 2.
    assert_allowed(&get_with(&[("Accept-Charset", "utf-8")]));
    let strict = Validator::new(&ValidatorConfig {
        paranoia: 2,
        ..ValidatorConfig::default()
    })
    .expect("valid");
    assert_fired(
        &check(&strict, "GET", "/", &[("Accept-Charset", "utf-8")], ""),
        "proto-accept-charset",
    );
}

#[test]
fn accept_headers() {
    assert_flagged(
        &get_with(&[("Accept", "text/html; charset=CP1026, */*;q=0.8")]),
        Category::Protocol,
    );
    assert_flagged(
        &get_with(&[("Accept-Encoding", "gzip,&&**AAAA**,*")]),
        Category::Protocol,
    );
    assert_allowed(&get_with(&[(
        "Accept",
        "text/html;q=0.9;charset=\"iso-8859-1\",*/*;q=0.8",
    )]));
    assert_allowed(&get_with(&[(
        "Accept-Encoding",
        "gzip;q=1.0, identity; q=0.5, *;q=0",
    )]));
}

#[test]
fn content_type_parameters() {
    let post = |ct: &str| {
        check(
            &validator(),
            "POST",
            "/post",
            &[("Content-Type", ct)],
            "a=1",
        )
    };
    assert_blocked(
        &post("application/x-www-form-urlencoded;boundary=\"application/json\""),
        Category::Protocol,
    );
    assert_fired(
        &post("application/x-www-form-urlencoded; charset=\"UTF-8\"; garbage"),
        "proto-content-type-syntax",
    );
    assert_allowed(&post("application/x-www-form-urlencoded; charset=UTF-8"));
    // MTOM names the root part's media type in `type`: that is its purpose.
    let mtom = check(
        &validator(),
        "POST",
        "/soap",
        &[(
            "Content-Type",
            "multipart/related; type=\"application/xop+xml\"; boundary=b",
        )],
        "--b\r\nContent-Type: application/xop+xml\r\n\r\n<a/>\r\n--b--\r\n",
    );
    assert_not_fired(&mtom, "proto-content-type-confusion");
}

#[test]
fn rfc2109_cookies() {
    assert_flagged(
        &get_with(&[(
            "Cookie",
            "$Version=1; session=\"deadbeef; PHPSESSID=secret\"",
        )]),
        Category::Protocol,
    );
    assert_allowed(&get_with(&[("Cookie", "session=deadbeef; theme=dark")]));
}

#[test]
fn parameter_shape() {
    assert_fired(&post_form("param=%1G"), "proto-bad-escape");
    assert_fired(&get("/?test=50%"), "proto-bad-escape");
    assert_allowed(&get("/?discount=50%25&q=a%20b"));
    assert_fired(&get("/get?parameter%0A=test"), "proto-newline-in-name");
    // The final line break of a body is not part of its last name.
    assert_not_fired(&post_form("a=1&flag%0A"), "proto-newline-in-name");
    let long = format!("/?{}=foo", "1".repeat(101));
    assert_fired(&get(&long), "proto-long-name");
    assert_allowed(&get("/?utm_source_platform_name=newsletter"));
}

#[test]
fn method_override_in_form_body() {
    assert_flagged(&post_form("_method=DELETE&id=123"), Category::Protocol);
    assert_allowed(&post_form("method=card&id=123"));
}

#[test]
fn multipart_part_charsets_and_file_names() {
    let part = |head: &str| {
        let body = format!("--b\r\n{head}\r\n\r\nhello\r\n--b--\r\n");
        check(
            &validator(),
            "POST",
            "/upload",
            &[("Content-Type", "multipart/form-data; boundary=b")],
            &body,
        )
    };
    assert_flagged(
        &part(
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Type: text/plain; charset=shift-jis",
        ),
        Category::Protocol,
    );
    assert_flagged(
        &part("Content-Disposition: form-data; name=\"f\"; filename=\"file=.txt\""),
        Category::Protocol,
    );
    assert_allowed(&part(
        "Content-Disposition: form-data; name=\"a\"\r\nContent-Type: text/plain; charset=utf-8",
    ));
    assert_allowed(&part(
        "Content-Disposition: form-data; name=\"f\"; filename=\"holiday photo.jpg\"",
    ));
}

#[test]
fn session_ids_from_elsewhere() {
    let json = |referer: Option<&str>, body: &str| {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(r) = referer {
            headers.push(("Referer", r));
        }
        check(&validator(), "POST", "/", &headers, body)
    };
    assert_blocked(
        &json(Some("http://attacker.example/"), r#"{"phpsession":"foo"}"#),
        Category::Protocol,
    );
    // A session id as a JSON value, or from the site itself, is ordinary.
    assert_allowed(&json(
        Some("http://attacker.example/"),
        r#"{"type":"session"}"#,
    ));
    assert_allowed(&json(
        Some("https://shop.example.com/cart"),
        r#"{"sessionid":"x"}"#,
    ));
    // In the URL without any referer: a planted link.
    assert_flagged(&get("/login?jsessionid=abc123"), Category::Protocol);
    // API clients send no referer; a session key in their JSON body is not a planted link.
    assert_allowed(&json(None, r#"{"session_id":"abc"}"#));
}

#[test]
fn paranoia_out_of_range_is_an_error() {
    for level in [0, 5] {
        assert!(matches!(
            Validator::new(&ValidatorConfig {
                paranoia: level,
                ..ValidatorConfig::default()
            }),
            Err(Error::Paranoia { .. })
        ));
    }
}

#[test]
fn script_pages_are_not_uploads() {
    assert_allowed(&get("/index.php?page=2"));
    assert_allowed(&get("/app/login.jsp"));
    assert_flagged(&post_form("filename=shell.php"), Category::CodeInjection);
}

fn at(level: u8) -> Validator {
    Validator::new(&ValidatorConfig {
        paranoia: level,
        ..ValidatorConfig::default()
    })
    .expect("valid")
}

#[test]
fn paranoia_2_checks() {
    let post_raw = |v: &Validator| check(v, "PUT", "/resource/1", &[], r#"{"name":"x"}"#);
    assert_allowed(&post_raw(&at(1)));
    assert_fired(&post_raw(&at(2)), "proto-body-without-type");
    let offsite = "/go?next=https://elsewhere.example/page";
    assert_allowed(&check(&at(1), "GET", offsite, &[], ""));
    assert_fired(&check(&at(2), "GET", offsite, &[], ""), "rfi-offsite-url");
    // A link back to the site itself is no finding at any level.
    let own = "/go?next=https://shop.example.com/cart";
    assert_not_fired(&check(&at(4), "GET", own, &[], ""), "rfi-offsite-url");
    let admin = "/get?code=cscli+alerts+list";
    assert_allowed(&check(&at(1), "GET", admin, &[], ""));
    assert_flagged(
        &check(&at(2), "GET", admin, &[], ""),
        Category::CommandInjection,
    );
}

#[test]
fn paranoia_3_checks() {
    let dup = "/?pineapple=pizza&pineapple=aint-pizza";
    assert_not_fired(
        &check(&at(2), "GET", dup, &[], ""),
        "proto-duplicate-parameter",
    );
    assert_fired(
        &check(&at(3), "GET", dup, &[], ""),
        "proto-duplicate-parameter",
    );
    // Array parameters repeat by design.
    assert_not_fired(
        &check(&at(3), "GET", "/?tag[]=a&tag[]=b", &[], ""),
        "proto-duplicate-parameter",
    );
    let cc = [("Cache-Control", "max-age=1,,,max-stale=2")];
    assert_not_fired(&check(&at(2), "GET", "/", &cc, ""), "proto-cache-control");
    assert_fired(&check(&at(3), "GET", "/", &cc, ""), "proto-cache-control");
    let good = [("Cache-Control", "no-cache, max-age=0")];
    assert_not_fired(&check(&at(3), "GET", "/", &good, ""), "proto-cache-control");
    assert_fired(
        &check(&at(3), "GET", "/get?x=LIKE%20NULL", &[], ""),
        "sqli-bare-operator",
    );
    assert_not_fired(
        &check(&at(2), "GET", "/get?x=LIKE%20NULL", &[], ""),
        "sqli-bare-operator",
    );
    assert_not_fired(
        &check(&at(3), "GET", "/get?x=like+new", &[], ""),
        "sqli-bare-operator",
    );
    assert_fired(
        &check(&at(3), "GET", "/get?x=%27c%27url%20localhost", &[], ""),
        "cmd-quoted-letter",
    );
    assert_not_fired(
        &check(&at(3), "GET", "/get?test=O%27keefe%27s", &[], ""),
        "cmd-quoted-letter",
    );
}

#[test]
fn paranoia_4_checks() {
    let run = "/get?var=%21%40%23%24%25%5e%26%2a%28%29";
    assert_not_fired(
        &check(&at(3), "GET", run, &[], ""),
        "sqli-special-character-run",
    );
    assert_fired(
        &check(&at(4), "GET", run, &[], ""),
        "sqli-special-character-run",
    );
    assert_not_fired(
        &check(&at(4), "GET", "/get?q=hello+(world)", &[], ""),
        "sqli-special-character-run",
    );
}

/// The shape of the 376-byte request that stopped the tap: a multipart `_charset_` field with
/// multi-byte characters where its 120-byte window ends ("end byte index 163 is not a char
/// boundary"). Every alignment of 2-, 3- and 4-byte characters is tried, and the window still
/// finds an evasive charset.
#[test]
fn multipart_charset_window_ends_on_a_character_boundary() {
    let v = validator();
    let multipart = [("Content-Type", "multipart/form-data; boundary=b")];
    for ch in ["\u{e9}", "\u{20ac}", "\u{1f600}"] {
        for pad in 0..4 {
            for (charset, evasive) in [("utf-7", true), ("utf-8", false)] {
                let body = format!(
                    "--b\r\nContent-Disposition: form-data; name=\"_charset_\"\r\n\r\n{charset}{}{}\r\n--b--\r\n",
                    "x".repeat(pad),
                    ch.repeat(100),
                );
                let verdict = check(&v, "POST", "/upload", &multipart, &body);
                if evasive {
                    assert_fired(&verdict, "proto-charset");
                } else {
                    assert_not_fired(&verdict, "proto-charset");
                }
            }
        }
    }
}
