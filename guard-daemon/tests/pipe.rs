//! A command whose reader stops early (`guard man | head -1`) ends quietly, killed by SIGPIPE
//! as other tools are, not with a panic about the failed write.
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_a_command_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guard"))
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The only read end closes before the page is written: every write fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(nix::libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}
