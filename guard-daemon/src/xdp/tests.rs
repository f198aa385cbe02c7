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

/// The layout check and the removal of own pins, on a plain directory (symlinks and files stand
/// in for bpffs pins; no root needed).
#[test]
fn layout_check_refuses_replaces_and_removes_only_own_pins() {
    use super::pins::{check_layout, read_layout, remove_own};
    use guard_common::layout::LAYOUT_VERSION;
    let dir = std::env::temp_dir().join(format!("guard-pins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Empty: the version is written.
    check_layout(&dir, false).expect("an empty directory is ours");
    assert_eq!(
        read_layout(&dir).expect("readable").as_deref(),
        Some(LAYOUT_VERSION)
    );
    check_layout(&dir, false).expect("the same version again");
    // Another version with a map pinned: refused, changing nothing.
    std::fs::remove_file(dir.join("layout")).expect("unlink");
    std::os::unix::fs::symlink("guard-ffff", dir.join("layout")).expect("symlink");
    std::fs::write(dir.join("BANS_V4"), "a map of another build").expect("write");
    std::fs::write(dir.join("foreign"), "not guard's").expect("write");
    let e = check_layout(&dir, false).expect_err("another layout");
    let text = e.to_string();
    assert!(
        text.contains("have layout guard-ffff") && text.contains(LAYOUT_VERSION),
        "{text}"
    );
    assert!(
        dir.join("BANS_V4").exists(),
        "nothing removed when refusing"
    );
    // Versionless, and the "map" is no map: refused, naming it.
    std::fs::remove_file(dir.join("layout")).expect("unlink");
    let text = check_layout(&dir, false)
        .expect_err("versionless")
        .to_string();
    assert!(text.contains("maps that differ: BANS_V4"), "{text}");
    // Replaced: the old map pin goes, anything else stays.
    check_layout(&dir, true).expect("--replace-pins");
    assert!(!dir.join("BANS_V4").exists());
    assert!(dir.join("foreign").exists());
    assert_eq!(
        read_layout(&dir).expect("readable").as_deref(),
        Some(LAYOUT_VERSION)
    );
    // At exit: own pins only; the directory stays while something else is in it.
    std::fs::write(dir.join("CONFIG"), "").expect("write");
    std::fs::write(dir.join("link_eth0"), "").expect("write");
    remove_own(&dir, &["eth0".to_owned()]);
    assert!(!dir.join("CONFIG").exists() && !dir.join("link_eth0").exists());
    assert!(dir.join("foreign").exists());
    assert!(read_layout(&dir).expect("readable").is_none());
    std::fs::remove_file(dir.join("foreign")).expect("unlink");
    remove_own(&dir, &[]);
    assert!(!dir.exists(), "an empty directory is removed");
}
