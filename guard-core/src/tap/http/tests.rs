use super::*;

fn limits() -> Limits {
    Limits {
        max_head: 1024,
        body_cap: 8,
        user_header: Some("x-user".into()),
        client_header: None,
    }
}

/// Feeds `input` in pieces of `step` bytes; returns the messages and the first error.
fn run(kind: Kind, input: &[u8], step: usize) -> (Vec<Message>, Option<HttpError>) {
    let mut p = Parser::new(kind, limits());
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        let mut rest = piece;
        while !rest.is_empty() {
            match p.advance(rest, false) {
                Ok(progress) => {
                    rest = &rest[progress.consumed..];
                    out.extend(progress.message);
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn request(m: &Message) -> &RequestHead {
    match &m.head {
        Head::Request(r) => r,
        Head::Response(_) => panic!("not a request"),
    }
}

#[test]
fn head_split_anywhere_gives_the_same_request() {
    let input = b"PUT /p?q=1 HTTP/1.1\r\nHost: h\r\nX-User: bob\r\nContent-Length: 4\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\nbody";
    for step in 1..input.len() {
        let (msgs, err) = run(Kind::Request, input, step);
        assert!(err.is_none(), "step {step}: {err:?}");
        assert_eq!(msgs.len(), 1, "step {step}");
        let r = request(&msgs[0]);
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
            ("PUT", "/p", Some("q=1"))
        );
        assert_eq!(r.user_header.as_deref(), Some("bob"));
        assert_eq!(r.x_forwarded_for.as_deref(), Some("1.1.1.1, 2.2.2.2"));
        assert_eq!(msgs[0].body, b"body");
        assert_eq!(msgs[0].wire_len, input.len() as u64);
    }
}

#[test]
fn partial_head_is_incomplete_not_an_error() {
    let mut p = Parser::new(Kind::Request, limits());
    let progress = p.advance(b"GET / HTTP/1.1\r\nHo", false).unwrap();
    assert_eq!(progress.consumed, 18);
    assert!(progress.message.is_none());
    assert!(!p.is_idle());
    assert!(matches!(p.finish(), Err(HttpError::Truncated)));
}

#[test]
fn bare_lf_lines_and_leading_blank_lines_are_accepted() {
    let (msgs, err) = run(Kind::Request, b"\r\n\r\nGET /lf HTTP/1.0\nHost: h\n\n", 3);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(request(&msgs[0]).path, "/lf");
    assert_eq!(request(&msgs[0]).version, 0);
}

#[test]
fn absolute_form_target_becomes_a_path() {
    let (msgs, _) = run(
        Kind::Request,
        b"GET http://example.com/x?y HTTP/1.1\r\n\r\n",
        100,
    );
    assert_eq!(request(&msgs[0]).path, "/x");
    assert_eq!(request(&msgs[0]).query.as_deref(), Some("y"));
}

/// A request target with UTF-8 where a scheme would end (byte 7 or 8) is kept as it is, not
/// sliced inside a character (this panicked and stopped the capture thread).
#[test]
fn utf8_target_shorter_than_a_scheme_is_not_cut_inside_a_character() {
    for target in ["/aaaaa\u{e9}", "/aaaaaa\u{20ac}x", "htt\u{e9}://h/"] {
        let input = format!("GET {target} HTTP/1.1\r\n\r\n");
        let (msgs, err) = run(Kind::Request, input.as_bytes(), 100);
        assert!(err.is_none(), "{target}: {err:?}");
        assert_eq!(request(&msgs[0]).path, target);
    }
}

#[test]
fn head_limit_applies_to_split_and_whole_heads() {
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2000));
    big.extend_from_slice(b"\r\n\r\n");
    for step in [1, 100, big.len()] {
        let (msgs, err) = run(Kind::Request, &big, step);
        assert!(msgs.is_empty());
        assert!(
            matches!(err, Some(HttpError::HeadTooLarge { limit: 1024 })),
            "step {step}: {err:?}"
        );
    }
}

#[test]
fn content_length_rules() {
    let cases: [(&[u8], &str); 4] = [
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "bad"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflict",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "bad",
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "te"),
    ];
    for (input, want) in cases {
        let (_, err) = run(Kind::Request, input, 1000);
        let ok = match want {
            "bad" => matches!(err, Some(HttpError::BadContentLength)),
            "conflict" => matches!(err, Some(HttpError::ConflictingContentLength)),
            _ => matches!(err, Some(HttpError::UnsupportedTransferEncoding)),
        };
        assert!(ok, "{want}: {err:?}");
    }
    // Same value twice is fine.
    let (msgs, err) = run(
        Kind::Request,
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        1000,
    );
    assert!(err.is_none());
    assert_eq!(msgs[0].body_len, 1);
}

#[test]
fn chunked_framing_errors() {
    let bad: [&[u8]; 4] = [
        b"\r\n",                 // empty size line
        b"1x\r\n",               // bad hex digit
        b"ffffffffffffffff\r\n", // too many digits
        b"1\r\naXX",             // missing crlf after data
    ];
    for body in bad {
        let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(body);
        let (_, err) = run(Kind::Request, &input, 1);
        assert!(err.is_some(), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn chunked_body_keeps_only_the_cap() {
    let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\na\r\n0123456789\r\n5\r\nabcde\r\n0\r\n\r\n";
    let (msgs, err) = run(Kind::Request, input, 4);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(msgs[0].body, b"01234567");
    assert_eq!(msgs[0].body_len, 15);
    assert_eq!(msgs[0].wire_len, input.len() as u64);
}

#[test]
fn response_until_close_and_upgrade() {
    let mut p = Parser::new(Kind::Response, limits());
    let progress = p.advance(b"HTTP/1.1 200 OK\r\n\r\nstream", false).unwrap();
    assert!(progress.message.is_none());
    p.advance(b"stream", false).unwrap();
    let m = p.finish().unwrap().unwrap();
    assert_eq!(m.body_len, 6);

    let mut p = Parser::new(Kind::Response, limits());
    let input = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    let progress = p.advance(input, false).unwrap();
    assert!(progress.message.unwrap().upgraded);
    assert!(p.is_opaque());
    assert_eq!(
        p.advance(&input[progress.consumed..], false)
            .unwrap()
            .consumed,
        7
    );
}

#[test]
fn response_to_head_has_no_body() {
    let mut p = Parser::new(Kind::Response, limits());
    let progress = p
        .advance(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true)
        .unwrap();
    assert!(progress.message.is_some());
    assert!(p.is_idle());
}

#[test]
fn check_head_finds_the_blank_line_at_every_offset() {
    for pad in 0..40 {
        let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
        buf.extend(std::iter::repeat_n(b'a', pad));
        let end = buf.len() + 4;
        buf.extend_from_slice(b"\r\n\r\nnext");
        assert_eq!(super::check_head(&buf, 0), Some(end), "pad {pad}");
        assert_eq!(super::check_head(&buf[..end - 1], 0), None, "pad {pad}");
        let lf_only = String::from_utf8(buf.clone())
            .unwrap()
            .replace("\r\n", "\n");
        assert_eq!(
            super::check_head(lf_only.as_bytes(), 0),
            Some(end - 3),
            "pad {pad}"
        );
    }
}

#[test]
fn every_request_header_is_kept_in_order_for_the_validator() {
    let input = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: id=1' OR '1'='1\r\nAuthorization: Basic YTpi\r\nRange: bytes=0-1\r\nX-Odd:  spaced  \r\n\r\n";
    let (msgs, err) = run(Kind::Request, input, input.len());
    assert!(err.is_none());
    let all: Vec<(&str, &str)> = request(&msgs[0]).all.iter().collect();
    assert_eq!(
        all,
        [
            ("Host", "h"),
            ("Cookie", "id=1' OR '1'='1"),
            ("Authorization", "Basic YTpi"),
            ("Range", "bytes=0-1"),
            ("X-Odd", "spaced"),
        ]
    );
}
