//! The protected list from host facts given as text, and each refusal.
use super::*;

const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth1\t0000A8C0\t0101A8C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
";

const ROUTE6: &str = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";

fn net(s: &str) -> Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn default_gateways_come_from_the_default_routes_only() {
    assert_eq!(default_gateways_v4(ROUTE), [ip("10.0.0.1")]);
    assert_eq!(default_gateways_v6(ROUTE6), [ip("fe80::1")]);
    assert!(default_gateways_v4("").is_empty());
    assert!(default_gateways_v4("header\ngarbage line\n").is_empty());
    assert!(default_gateways_v6("00 zz\n").is_empty());
}

#[test]
fn resolvers_are_the_nameserver_lines() {
    let text = "# c\nsearch example.org\nnameserver 10.0.0.53\nnameserver fe80::53%eth0\n\
                nameserver bogus\noptions ndots:2\n  nameserver 192.0.2.53\n";
    assert_eq!(
        nameservers(text),
        [ip("10.0.0.53"), ip("fe80::53"), ip("192.0.2.53")]
    );
}

#[test]
fn the_ai_endpoint_host_and_port() {
    let host = |u| url_host(u);
    assert_eq!(
        host("http://127.0.0.1:8080/v1"),
        Some(("127.0.0.1".into(), 8080))
    );
    assert_eq!(
        host("https://api.example.com/v1"),
        Some(("api.example.com".into(), 443))
    );
    assert_eq!(
        host("http://[2001:db8::5]:9000/x"),
        Some(("2001:db8::5".into(), 9000))
    );
    assert_eq!(
        host("http://user:pw@10.1.2.3/v1?q"),
        Some(("10.1.2.3".into(), 80))
    );
    assert_eq!(host("ftp://x"), None);
    assert_eq!(host("no url"), None);
    assert_eq!(host("http://:80/"), None);
    assert_eq!(host("http://h:notaport/"), None);
}

fn facts() -> HostFacts {
    HostFacts {
        addresses: vec![
            ("lo".into(), ip("127.0.0.1")),
            ("eth0".into(), ip("10.0.0.5")),
            ("eth0".into(), ip("2001:db8::5")),
            // Listed once though found twice.
            ("eth1".into(), ip("10.0.0.5")),
        ],
        gateways: vec![ip("10.0.0.1"), ip("fe80::1")],
        resolvers: vec![ip("10.0.0.53"), ip("0.0.0.0")],
        ai_endpoint: vec![ip("192.0.2.80")],
    }
}

fn list() -> ProtectList {
    ProtectList::compute(
        &facts(),
        &[net("198.51.100.0/28")],
        &[net("203.0.113.7"), net("10.0.0.1")],
    )
}

#[test]
fn the_list_holds_every_source_once_with_its_reason() {
    let l = list();
    let got: Vec<(String, Why)> = l
        .entries()
        .iter()
        .map(|e| (e.net.to_string(), e.why))
        .collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1".into(), Why::OwnAddress),
            ("10.0.0.5".into(), Why::OwnAddress),
            ("2001:db8::5".into(), Why::OwnAddress),
            ("10.0.0.1".into(), Why::Gateway),
            ("fe80::1".into(), Why::Gateway),
            ("10.0.0.53".into(), Why::Resolver),
            ("198.51.100.0/28".into(), Why::TrustedProxy),
            ("192.0.2.80".into(), Why::AiEndpoint),
            ("203.0.113.7".into(), Why::Configured),
        ]
    );
    assert_eq!(l.entries()[1].found_in, "eth0");
}

#[test]
fn a_protected_address_or_one_inside_a_protected_range_is_never_banned() {
    let l = list();
    for (target, why) in [
        ("10.0.0.1", Why::Gateway),
        ("10.0.0.5", Why::OwnAddress),
        ("10.0.0.53", Why::Resolver),
        ("198.51.100.3", Why::TrustedProxy),
        ("198.51.100.0/28", Why::TrustedProxy),
        ("192.0.2.80", Why::AiEndpoint),
        ("203.0.113.7", Why::Configured),
        ("2001:db8::5", Why::OwnAddress),
    ] {
        for force in [false, true] {
            let e = l.check(&net(target), force).unwrap_err();
            assert!(
                matches!(&e, Refusal::Protected { why: w, .. } if *w == why),
                "{target}: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("is protected") && msg.contains(&why.to_string()),
                "{msg}"
            );
        }
    }
}

#[test]
fn a_range_containing_a_protected_address_needs_force() {
    let l = list();
    let e = l.check(&net("10.0.0.0/8"), false).unwrap_err();
    assert!(matches!(e, Refusal::Contains { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("contains") && msg.contains("--force"), "{msg}");
    assert_eq!(l.check(&net("10.0.0.0/8"), true), Ok(()));
    // Containing part of a trusted proxies' range is containing too.
    assert!(l.check(&net("198.51.100.0/24"), false).is_err());
    assert!(l.check(&net("2001:db8::/32"), false).is_err());
    assert_eq!(l.check(&net("0.0.0.0/0"), true), Ok(()));
}

#[test]
fn anything_else_is_banned_freely() {
    let l = list();
    for target in [
        "10.0.0.2",
        "10.0.1.0/24",
        "198.51.100.16/28",
        "2001:db8::6",
        "2001:db8:1::/48",
        // The unspecified address in resolv.conf protects nothing.
        "0.0.0.0",
    ] {
        assert_eq!(l.check(&net(target), false), Ok(()), "{target}");
    }
    assert_eq!(
        ProtectList::default().check(&net("0.0.0.0/0"), false),
        Ok(())
    );
}

#[test]
fn the_running_host_reads_without_failing() {
    // Real facts of whatever machine runs the tests: at least the loopback address.
    let f = HostFacts::read(Some("http://127.0.0.1:8080/v1"));
    assert!(f.addresses.iter().any(|(_, a)| a.is_loopback()), "{f:?}");
    assert_eq!(f.ai_endpoint, [ip("127.0.0.1")]);
}
