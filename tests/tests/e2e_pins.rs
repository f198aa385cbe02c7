//! End to end: the pin directory carries the maps' layout version; pins of another layout are
//! never reused silently (refused, or rebuilt from the store with `--replace-pins`); the bpffs
//! root is refused as a pin directory; `keep_attached = false` removes only guard's own pins.
use std::path::Path;
use std::process::Command;

use guard_tests::{Daemon, Link, guard_bin, ping_ok, require_root, unique};

fn ok(r: Result<String, String>) -> anyhow::Result<String> {
    r.map_err(anyhow::Error::msg)
}

fn layout(pin_dir: &Path) -> Option<String> {
    std::fs::read_link(pin_dir.join("layout"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

fn set_layout(pin_dir: &Path, version: Option<&str>) -> anyhow::Result<()> {
    let file = pin_dir.join("layout");
    let _ = std::fs::remove_file(&file);
    if let Some(v) = version {
        std::os::unix::fs::symlink(v, &file)?;
    }
    Ok(())
}

#[test]
fn pins_of_another_layout_are_refused_and_replaced_from_the_store() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let (far, near) = (&link.far, link.near_v4);
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    let ours = layout(&d.pin_dir).expect("a started guard writes its layout version");
    assert!(ours.starts_with("guard-"), "{ours}");
    ok(d.cli(&["ban", "add", &link.far_v4.to_string(), "--ttl", "1h"]))?;
    assert!(!ping_ok(far, near), "the ban must drop");
    d.stop()?;

    // Another build's maps: refused, and the old program keeps enforcing meanwhile.
    set_layout(&d.pin_dir, Some("guard-0123456789abcdef"))?;
    let e = d
        .spawn()
        .expect_err("pins of another layout must be refused");
    let e = e.to_string();
    assert!(
        e.contains("have layout guard-0123456789abcdef")
            && e.contains(&format!("needs {ours}"))
            && e.contains("--replace-pins"),
        "{e}"
    );
    assert!(!ping_ok(far, near), "the pinned program still enforces");

    // Maps pinned by a guard that wrote no layout at all (before versions existed): reused only
    // because every one of them is exactly what this build creates.
    set_layout(&d.pin_dir, None)?;
    d.spawn()?;
    assert_eq!(layout(&d.pin_dir).as_deref(), Some(ours.as_str()));
    assert!(d.log_text().contains("pins without a layout version match"));
    assert!(!ping_ok(far, near));
    d.stop()?;
    // A versionless pin directory whose BANS_V4 is another kind of map (another pin of the
    // CONFIG array, a hard link on bpffs): refused, naming the map.
    let mut other = Daemon::prepare(&link.near, &link.near_if, "")?;
    std::fs::create_dir_all(&other.pin_dir)?;
    std::fs::hard_link(d.pin_dir.join("CONFIG"), other.pin_dir.join("BANS_V4"))?;
    let e = other
        .spawn()
        .expect_err("a versionless pin of another shape must be refused");
    assert!(
        e.to_string()
            .contains("without layout versions; maps that differ: BANS_V4)"),
        "{e}"
    );
    drop(other);
    assert!(!ping_ok(far, near));

    // --replace-pins: new maps, rebuilt from the store, the ban enforced.
    set_layout(&d.pin_dir, Some("guard-0123456789abcdef"))?;
    d.args = vec!["--replace-pins".into()];
    d.spawn()?;
    d.args.clear();
    assert_eq!(layout(&d.pin_dir).as_deref(), Some(ours.as_str()));
    assert!(
        d.log_text().contains("--replace-pins: unpinning the maps"),
        "{}",
        d.log_text()
    );
    assert!(!ping_ok(far, near), "the ban from the store is enforced");
    let status = d.json(&["status"])?;
    let exact = status["maps"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["map"] == "IPv4 bans"))
        .and_then(|m| m["entries"].as_u64());
    assert_eq!(exact, Some(1), "{status}");
    // And a plain restart reuses them again.
    d.stop()?;
    d.spawn()?;
    assert!(!ping_ok(far, near));
    ok(d.cli(&["ban", "rm", &link.far_v4.to_string()]))?;
    assert!(ping_ok(far, near));
    Ok(())
}

#[test]
fn the_bpffs_root_is_refused_as_pin_dir() -> anyhow::Result<()> {
    require_root!();
    let base = std::env::temp_dir().join(format!("guard-test-{}", unique("root")));
    std::fs::create_dir_all(&base)?;
    // The socket's directory must be private, or guard refuses before it reads the pin dir.
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let run = |pin_dir: &Path| -> anyhow::Result<String> {
        let out = Command::new(guard_bin()?)
            .arg("--socket")
            .arg(base.join("guard.sock"))
            .args(["run", "--interface", "lo", "--state-dir"])
            .arg(base.join("state"))
            .arg("--pin-dir")
            .arg(pin_dir)
            .output()?;
        assert!(!out.status.success(), "guard run must refuse {pin_dir:?}");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let before: Vec<_> = std::fs::read_dir("/sys/fs/bpf")?.collect();
    for dir in ["/sys/fs/bpf", "/sys/fs/bpf/", "/sys/fs/bpf/guard/../"] {
        let e = run(Path::new(dir))?;
        assert!(e.contains("xdp.pin_dir"), "{dir}: {e}");
    }
    let e = run(Path::new("/sys/fs/bpf"))?;
    assert!(e.contains("not /sys/fs/bpf itself"), "{e}");
    assert!(!Path::new("/sys/fs/bpf/layout").exists());
    assert_eq!(std::fs::read_dir("/sys/fs/bpf")?.count(), before.len());

    // Any other bpffs mount's root is refused as well, when guard gets to it.
    let mnt = base.join("bpffs");
    std::fs::create_dir_all(&mnt)?;
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&mnt)
        .status()?
        .success();
    if mounted {
        let e = run(&mnt);
        let _ = Command::new("umount").arg(&mnt).status();
        let e = e?;
        assert!(e.contains("root of a bpffs mount"), "{e}");
    } else {
        println!("a second bpffs mount could not be made: its root was not tried");
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

#[test]
fn keep_attached_false_removes_only_guards_own_pins() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let (far, near) = (&link.far, link.near_v4);
    let mut d = Daemon::prepare(&link.near, &link.near_if, "[xdp]\nkeep_attached = false\n")?;
    std::fs::create_dir_all(&d.pin_dir)?;
    let foreign = d.pin_dir.join("other_tool_map");
    std::os::unix::fs::symlink("not guard's", &foreign)?;
    let foreign_dir = d.pin_dir.join("other_tool");
    std::fs::create_dir(&foreign_dir)?;
    d.spawn()?;
    ok(d.cli(&["ban", "add", &link.far_v4.to_string(), "--ttl", "1h"]))?;
    assert!(!ping_ok(far, near));
    let ours = ["layout", "BANS_V4", "CONFIG", "HOT", "DENSE"];
    for name in ours {
        assert!(
            d.pin_dir.join(name).symlink_metadata().is_ok(),
            "{name} pinned"
        );
    }
    let link_pin = d.pin_dir.join(format!("link_{}", link.near_if));
    assert!(link_pin.exists());
    d.stop()?;
    assert!(
        foreign.symlink_metadata().is_ok(),
        "another tool's pin was removed"
    );
    assert!(foreign_dir.is_dir(), "another tool's directory was removed");
    for name in ours {
        assert!(
            d.pin_dir.join(name).symlink_metadata().is_err(),
            "{name} left behind"
        );
    }
    assert!(link_pin.symlink_metadata().is_err(), "link pin left behind");
    assert!(ping_ok(far, near), "detached: the ban no longer applies");
    // Alone in its directory, guard removes the directory too.
    std::fs::remove_file(&foreign)?;
    std::fs::remove_dir(&foreign_dir)?;
    d.spawn()?;
    d.stop()?;
    assert!(!d.pin_dir.exists(), "an empty pin directory is removed");
    Ok(())
}
