//! Extraction, explanations, configuration, bounds and random input.

use super::*;

// ---- Extraction and explanations ---------------------------------------------------------------

#[test]
fn findings_name_their_field() {
    let v = post_json(r#"{"user": {"name": "<script>alert(1)</script>", "tags": ["ok"]}}"#);
    assert!(
        v.findings.iter().any(|f| f.field == "json:$.user.name"),
        "{v:#?}"
    );
    let v = get("/items?id=1%20union%20select%201");
    assert!(v.findings.iter().any(|f| f.field == "query:id"), "{v:#?}");
    let v = check(
        &validator(),
        "GET",
        "/",
        &[("Cookie", "a=1; sid=1' or '1'='1")],
        "",
    );
    assert!(v.findings.iter().any(|f| f.field == "cookie:sid"), "{v:#?}");
}

#[test]
fn multipart_fields_inspected_and_files_skipped() {
    let body = "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n<script>alert(1)</script>\r\n--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\n' union select 1 --\r\n--b--\r\n";
    let v = check(
        &validator(),
        "POST",
        "/p",
        &[("Content-Type", "multipart/form-data; boundary=b")],
        body,
    );
    assert!(
        v.findings.iter().any(|f| f.field == "multipart:title"),
        "{v:#?}"
    );
    assert!(
        !v.findings.iter().any(|f| f.category == Category::Sqli),
        "file content inspected: {v:#?}"
    );
}

#[test]
fn fragments_are_truncated() {
    let long = format!("x' union select {} from t", "a,".repeat(500));
    let v = post_json(&serde_json::json!({ "q": long }).to_string());
    assert!(
        v.findings.iter().all(|f| f.fragment.chars().count() <= 81),
        "{v:#?}"
    );
}

// ---- Configuration -----------------------------------------------------------------------------

#[test]
fn thresholds_make_a_triage_band() {
    let v = validator();
    // One weight-4 finding: triage with the defaults.
    let verdict = check(&v, "GET", "/?q=%22or%221", &[], "");
    assert_eq!(verdict.action, Action::Triage, "{verdict:#?}");
    let strict = Validator::new(&ValidatorConfig {
        block_threshold: 3,
        triage_threshold: 1,
        ..ValidatorConfig::default()
    })
    .expect("valid");
    assert_eq!(
        check(&strict, "GET", "/?q=%22or%221", &[], "").action,
        Action::Block
    );
    assert!(matches!(
        Validator::new(&ValidatorConfig {
            block_threshold: 2,
            triage_threshold: 3,
            ..ValidatorConfig::default()
        }),
        Err(Error::Thresholds { .. })
    ));
}

#[test]
fn categories_and_path_exceptions() {
    let mut config = ValidatorConfig::default();
    config.categories.xss = false;
    config.exceptions.push(PathException {
        path_prefix: "/upload".to_owned(),
        skip_body: true,
        skip_query: false,
        disabled_categories: vec![Category::Sqli],
    });
    let v = Validator::new(&config).expect("valid");
    assert_allowed(&check(
        &v,
        "GET",
        "/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        &[],
        "",
    ));
    let body = "x=1 union select password from users";
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_allowed(&check(&v, "POST", "/upload/file", &ct, body));
    assert_blocked(&check(&v, "POST", "/post", &ct, body), Category::Sqli);
    assert_allowed(&check(
        &v,
        "GET",
        "/upload?id=1%20union%20select%201",
        &[],
        "",
    ));
}

#[test]
fn config_deserialises_with_defaults_and_rejects_unknown_keys() {
    let c: ValidatorConfig = serde_json::from_str(
        r#"{"block_threshold": 7, "categories": {"prompt_injection": false}}"#,
    )
    .expect("parses");
    assert_eq!(c.block_threshold, 7);
    assert_eq!(
        c.triage_threshold,
        ValidatorConfig::default().triage_threshold
    );
    assert!(!c.categories.prompt_injection && c.categories.sqli);
    assert!(serde_json::from_str::<ValidatorConfig>(r#"{"blok_threshold": 7}"#).is_err());
}

// ---- Bounds and robustness ---------------------------------------------------------------------

#[test]
fn body_beyond_the_cap_is_not_inspected() {
    let v = validator();
    let mut body = "a=".to_owned();
    body.push_str(&"x".repeat(v.config().max_body_bytes));
    body.push_str("&b=1' union select password from users--");
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_allowed(&check(&v, "POST", "/post", &ct, &body));
    // A 1 MB body of attacks costs no more than the cap.
    let big = "q=1' or 1=1 -- <script>&".repeat((1 << 20) / 24);
    let t = std::time::Instant::now();
    let verdict = check(&v, "POST", "/post", &ct, &big);
    assert_eq!(verdict.action, Action::Block);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn random_input_never_panics() {
    let v = validator();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"%25%2e%c0%af%u0027'\"<>;|&$(){}[]\\/*-#=+ \r\n\0abcSELECTunion../\xff\xfe+ADw-&#x3c;\\x41\\u0041";
    for _ in 0..100 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 3 == 0 {
                    (r >> 8) as u8
                } else {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                }
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let headers = [("Cookie", text.as_ref()), ("User-Agent", text.as_ref())];
        for ct in [
            "application/json",
            "multipart/form-data; boundary=a",
            "application/x-www-form-urlencoded",
            "text/xml",
        ] {
            let _ = v.inspect(&Request {
                method: "POST",
                version: Some(&text),
                path: &text,
                query: &text,
                headers: &headers,
                body: &bytes,
                content_type: Some(ct),
            });
        }
    }
}

#[test]
fn xml_values_and_names_are_inspected() {
    let v = check(
        &validator(),
        "POST",
        "/soap",
        &[("Content-Type", "application/xml")],
        r#"<?xml version="1.0"?><root><a probe="1' union select password from users--"></a></root>"#,
    );
    assert!(v.findings.iter().any(|f| f.field == "xml:@probe"), "{v:#?}");
    // A payload in a parameter name.
    let v = get("/get?java.lang.Runtime=1");
    assert!(
        v.findings
            .iter()
            .any(|f| f.field.starts_with("query-name:")),
        "{v:#?}"
    );
}

#[test]
fn session_fixation_needs_a_foreign_referer() {
    let v = validator();
    let foreign = check(
        &v,
        "GET",
        "/login?PHPSESSID=abc123",
        &[
            ("Host", "shop.example.com"),
            ("Referer", "https://evil.example/"),
        ],
        "",
    );
    assert_blocked(&foreign, Category::Protocol);
    let own = check(
        &v,
        "GET",
        "/login?PHPSESSID=abc123",
        &[
            ("Host", "shop.example.com"),
            ("Referer", "https://shop.example.com/"),
        ],
        "",
    );
    assert_allowed(&own);
}

/// The reason names the strongest finding's category, not the first one's: a SQL injection
/// sent to a `Host` that is an IP address is a SQL injection.
#[test]
fn the_strongest_finding_names_the_category() {
    let v = check(
        &validator(),
        "GET",
        "/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        &[("Host", "203.0.113.7"), ("User-Agent", "Mozilla/5.0")],
        "",
    );
    assert_eq!(v.action, Action::Block, "{v:#?}");
    assert_eq!(
        v.findings.first().map(|f| f.category),
        Some(Category::Protocol),
        "the protocol finding comes first: {v:#?}"
    );
    assert_eq!(v.strongest(), Some(Category::Sqli), "{v:#?}");
    assert_eq!(get("/").strongest(), None);
}
