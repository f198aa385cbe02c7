use super::*;

#[derive(Debug, Deserialize)]
struct File {
    tap: TapConfig,
}

#[test]
fn tap_section_parses_with_defaults_for_missing_keys() {
    let f: File = toml::from_str(
        r#"
        [tap]
        http_ports = [8000]
        idle_timeout = 30
        trusted_proxies = ["10.0.0.0/8", "2001:db8::1"]
        user_header = "X-User-Id"
        "#,
    )
    .unwrap();
    assert_eq!(f.tap.http_ports, [8000]);
    assert_eq!(f.tap.idle_timeout, Duration::from_secs(30));
    assert_eq!(f.tap.max_flows, TapConfig::default().max_flows);
    assert_eq!(f.tap.trusted_proxies[1].to_string(), "2001:db8::1");
    assert!(f.tap.trusted_proxies[1].is_host());
    assert!(f.tap.validate().is_ok());
    assert!(TapConfig::default().validate().is_ok());
}

#[test]
fn unknown_keys_and_bad_cidrs_are_rejected() {
    let err = toml::from_str::<File>("[tap]\nmax_flowz = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_flowz"), "{err}");
    let err = toml::from_str::<File>("[tap]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix"), "{err}");
}

#[test]
fn validation_names_the_key() {
    let c = TapConfig {
        max_head_size: 10,
        ..TapConfig::default()
    };
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "tap.max_head_size must be at least 1024"
    );
    let c = TapConfig {
        http_ports: vec![],
        ..TapConfig::default()
    };
    assert_eq!(c.validate(), Err(TapConfigError::NoPorts));
}

#[test]
fn cidr_membership() {
    let net: Net = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains("10.1.200.3".parse().unwrap()));
    assert!(!net.contains("10.2.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
    let all: Net = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.1".parse().unwrap()));
    let v6: Net = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("10.1.0.9".parse().unwrap()));
    assert!("nope/8".parse::<Net>().is_err());
}

#[test]
fn client_header_is_one_of_two_names() {
    let f: File = toml::from_str("[tap]\nclient_header = \"forwarded\"\n").unwrap();
    assert_eq!(f.tap.client_header, ClientHeader::Forwarded);
    assert_eq!(
        TapConfig::default().client_header,
        ClientHeader::XForwardedFor
    );
    let err = toml::from_str::<File>("[tap]\nclient_header = \"x-real-ip\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("x-forwarded-for"), "{err}");
    let c = TapConfig {
        max_flows_per_source: 0,
        ..TapConfig::default()
    };
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "tap.max_flows_per_source must be at least 1"
    );
}
