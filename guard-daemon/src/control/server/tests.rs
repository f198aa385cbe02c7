use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::*;
use crate::control::{Removed, SocketGroup, call, group_name};

/// A server in a private temporary directory, stopped and removed on drop.
struct TestServer {
    dir: PathBuf,
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    fn start(name: &str, access: Access, limits: Limits) -> Self {
        let dir = std::env::temp_dir().join(format!("guard-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("guard.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(async { bind(&path, &access) }).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = Arc::new(|req: Request| match req {
            Request::TapPorts { ports } => Response::ok(ports.unwrap_or_default()),
            Request::Status => Response::ok(vec![1u16]),
            _ => Response::err("not here"),
        });
        let server = runtime.spawn(serve_with(listener, access, limits, handler, async {
            let _ = stopped.await;
        }));
        Self {
            dir,
            path,
            runtime,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// One raw line sent, the answer's JSON.
    fn raw(&self, line: &[u8]) -> serde_json::Value {
        let mut s = StdUnixStream::connect(&self.path).unwrap();
        let _ = s.write_all(line);
        read_answer(&s)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_answer(s: &StdUnixStream) -> serde_json::Value {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Both ends over a real socket: the daemon's typed reply is the CLI's typed value.
#[test]
fn a_typed_reply_crosses_the_socket() {
    let t = TestServer::start("typed", Access::root_only(), Limits::default());
    let ports: Vec<u16> = call(
        &t.path,
        &Request::TapPorts {
            ports: Some(vec![80, 8080]),
        },
    )
    .unwrap();
    assert_eq!(ports, [80, 8080]);
    let err = call::<Removed>(&t.path, &Request::AllowLs).unwrap_err();
    assert!(
        matches!(&err, ControlError::Daemon(m) if m == "not here"),
        "{err:?}"
    );
    // The right reply for another request is an error, not a misread.
    let err = call::<Removed>(&t.path, &Request::TapPorts { ports: None }).unwrap_err();
    assert!(matches!(err, ControlError::Unexpected(_)), "{err:?}");
}

#[test]
fn the_socket_and_its_directory_are_private() {
    let t = TestServer::start("modes", Access::root_only(), Limits::default());
    assert_eq!(mode(&t.dir), 0o700);
    assert_eq!(mode(&t.path), 0o600);
    drop(t);
    // With a read-only group (the process's own, which exists): 0750 and 0660 with it.
    let gid = nix::unistd::getegid().as_raw();
    let group = SocketGroup {
        name: group_name(gid),
        gid,
    };
    let t = TestServer::start("group", Access::with_group(group), Limits::default());
    assert_eq!(mode(&t.dir), 0o750);
    assert_eq!(mode(&t.path), 0o660);
    assert_eq!(std::fs::metadata(&t.path).unwrap().gid(), gid);
    assert_eq!(std::fs::metadata(&t.dir).unwrap().gid(), gid);
}

#[test]
fn a_loose_socket_directory_is_refused() {
    let dir = std::env::temp_dir().join(format!("guard-ctl-loose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("guard.sock");
    let e = prepare_dir(&path, &Access::root_only())
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        e.contains("control socket directory")
            && e.contains(&dir.display().to_string())
            && e.contains("0755"),
        "{e}"
    );
    // The shared /tmp (1777) is refused the same way: a socket needs a directory of its own.
    let e = prepare_dir(Path::new("/tmp/guard.sock"), &Access::root_only())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/tmp") && e.contains("1777"), "{e}");
}

/// A request over 1 MiB is answered with an error, unread; the server goes on answering.
#[test]
fn a_request_over_the_limit_is_refused_unread() {
    let t = TestServer::start("large", Access::root_only(), Limits::default());
    let mut big = br#"{"op":"tap_ports","ports":["#.to_vec();
    while big.len() < 2 << 20 {
        big.extend_from_slice(b"80,");
    }
    big.extend_from_slice(b"80]}\n");
    let answer = t.raw(&big);
    assert_eq!(answer["ok"], false);
    let e = answer["error"].as_str().unwrap();
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    // The CLI's client sees the same message (it reads the answer after its write fails).
    let entries: Vec<u16> = vec![80; 400_000];
    let answer = call::<Vec<u16>>(
        &t.path,
        &Request::TapPorts {
            ports: Some(entries),
        },
    );
    match answer {
        Err(err) => assert!(err.to_string().contains("larger than"), "{err}"),
        Ok(ports) => panic!("a request of {} ports was read", ports.len()),
    }
    // Just under the limit is read and answered.
    let mut ok = br#"{"op":"tap_ports","ports":["#.to_vec();
    while ok.len() < (1 << 20) - 16 {
        ok.extend_from_slice(b"80,");
    }
    ok.extend_from_slice(b"80]}\n");
    assert_eq!(t.raw(&ok)["ok"], true);
    assert_eq!(
        t.raw(b"{\"op\":\"status\"}\n")["data"],
        serde_json::json!([1])
    );
    assert_eq!(t.raw(b"not json\n")["ok"], false);
}

/// A client that sends nothing is dropped after the read timeout, and others are answered
/// meanwhile.
#[test]
fn a_silent_client_is_dropped_and_blocks_nobody() {
    let limits = Limits {
        read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let t = TestServer::start("silent", Access::root_only(), limits);
    let silent = StdUnixStream::connect(&t.path).unwrap();
    let started = Instant::now();
    assert_eq!(t.raw(b"{\"op\":\"status\"}\n")["ok"], true);
    assert!(started.elapsed() < Duration::from_millis(300));
    let answer = read_answer(&silent);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no request line within"),
        "{answer}"
    );
    let mut rest = Vec::new();
    (&silent).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the answer");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Over the cap, a connection is told "busy" at once; once the idle ones are dropped, the
/// next is served.
#[test]
fn over_the_connection_cap_a_caller_is_told_busy() {
    let limits = Limits {
        read_timeout: Duration::from_millis(500),
        max_connections: 4,
        ..Limits::default()
    };
    let t = TestServer::start("cap", Access::root_only(), limits);
    let idle: Vec<StdUnixStream> = (0..4)
        .map(|_| StdUnixStream::connect(&t.path).unwrap())
        .collect();
    // Give the server the time to accept them.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let answer = t.raw(b"{\"op\":\"status\"}\n");
    assert!(
        answer["error"].as_str().unwrap().starts_with("busy:"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "answered at once"
    );
    // The idle ones time out; their places are free again.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(t.raw(b"{\"op\":\"status\"}\n")["ok"], true);
    drop(idle);
}

#[test]
fn readers_may_only_read() {
    let group = SocketGroup {
        name: "guard-ro".into(),
        gid: 4242,
    };
    let access = Access::with_group(group);
    let root = Peer {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
    let member = Peer {
        uid: 1000,
        gid: 1000,
        groups: vec![27, 4242],
    };
    let primary = Peer {
        uid: 1001,
        gid: 4242,
        groups: Vec::new(),
    };
    let stranger = Peer {
        uid: 1002,
        gid: 1002,
        groups: vec![27],
    };
    assert_eq!(access.role(&root), Role::Admin);
    assert_eq!(access.role(&member), Role::Reader);
    assert_eq!(access.role(&primary), Role::Reader);
    assert_eq!(access.role(&stranger), Role::Stranger);
    let add = Request::BanAdd {
        target: "192.0.2.7".parse().unwrap(),
        ttl_secs: None,
        reason: None,
        force: false,
        extend: false,
    };
    assert_eq!(access.refuse_request(&root, &add), None);
    assert_eq!(
        access.refuse_request(&member, &add).unwrap(),
        "permission denied: `ban add` needs root; uid 1000 may only read"
    );
    assert_eq!(access.refuse_request(&member, &Request::Stats), None);
    let e = access.refuse_request(&stranger, &Request::Stats).unwrap();
    assert!(e.contains("uid 1002") && e.contains("guard-ro"), "{e}");
    assert!(access.refuse_connection(&stranger).is_some());
    assert!(access.refuse_connection(&member).is_none());
    // Without a group, nobody but root.
    let root_only = Access::root_only();
    assert_eq!(root_only.role(&member), Role::Stranger);
    assert!(
        root_only
            .refuse_connection(&member)
            .unwrap()
            .contains("root-only")
    );
    assert_eq!(
        (root_only.dir_mode(), root_only.socket_mode()),
        (0o700, 0o600)
    );
    assert_eq!((access.dir_mode(), access.socket_mode()), (0o750, 0o660));
}

#[test]
fn accept_errors_back_off_and_are_said_once_a_kind() {
    let mut b = Backoff::default();
    let too_many = std::io::Error::from_raw_os_error(24);
    let system_full = std::io::Error::from_raw_os_error(23);
    assert_eq!(b.failed(&too_many), (Duration::from_millis(10), true));
    assert_eq!(b.failed(&too_many), (Duration::from_millis(20), false));
    assert_eq!(b.failed(&system_full), (Duration::from_millis(40), true));
    let mut last = Duration::ZERO;
    for _ in 0..20 {
        let (pause, first) = b.failed(&too_many);
        assert!(!first);
        last = pause;
    }
    assert_eq!(last, Duration::from_secs(1), "capped at 1 s");
    assert_eq!(b.succeeded(), Some(23));
    assert_eq!(b.succeeded(), None);
    // A new episode starts small and says its kinds again.
    assert_eq!(b.failed(&too_many), (Duration::from_millis(10), true));
}
