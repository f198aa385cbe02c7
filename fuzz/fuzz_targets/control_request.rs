//! One control-socket request line as the daemon reads it (`serde_json` into
//! `guard_daemon::control::Request`): what a local client may send. A request that parses must
//! serialise and parse back (the CLI and the daemon share the type).
#![no_main]

use guard_daemon::control::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let again = serde_json::to_vec(&request).expect("a parsed request serialises");
        serde_json::from_slice::<Request>(&again).expect("a serialised request parses back");
    }
    // The CLI reads the daemon's answer with the same parser.
    let _ = serde_json::from_slice::<Response>(data);
});
