//! Unit tests of the pure parts of the XDP layer.
#[test]
fn default_route_from_proc_table() {
    let table = "Iface\tDestination\tGateway \tFlags\n\
                     eth1\t0002A8C0\t00000000\t0001\n\
                     eth0\t00000000\t0102A8C0\t0003\n";
    assert_eq!(
        super::attach::parse_default_route(table).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        super::attach::parse_default_route("Iface\tDestination\n"),
        None
    );
}
