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

/// guard-common's table of pinned maps (hashed into the layout version) is what the compiled
/// program pins: same names, types, sizes, capacities and flags.
#[test]
fn the_layout_table_matches_the_compiled_object() {
    use guard_common::layout::PINNED_MAPS;
    if super::EBPF_STUB {
        println!("SKIPPED: built with the stub eBPF object (run `cargo xtask build`)");
        return;
    }
    let obj = aya_obj::Object::parse(super::OBJECT).expect("the embedded object parses");
    let pinned: Vec<&String> = obj
        .maps
        .iter()
        .filter(|(_, m)| m.pinning() == aya_obj::maps::PinningType::ByName)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        pinned.len(),
        PINNED_MAPS.len(),
        "the object pins {pinned:?}"
    );
    for l in PINNED_MAPS {
        let m = obj
            .maps
            .get(l.name)
            .unwrap_or_else(|| panic!("{} is not in the object", l.name));
        assert_eq!(
            (
                m.map_type(),
                m.key_size(),
                m.value_size(),
                m.max_entries(),
                m.map_flags()
            ),
            (l.map_type, l.key_size, l.value_size, l.max_entries, l.flags),
            "{}",
            l.name
        );
        assert_eq!(
            m.pinning(),
            aya_obj::maps::PinningType::ByName,
            "{}",
            l.name
        );
    }
}
