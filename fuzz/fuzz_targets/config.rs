//! The daemon's configuration file: TOML through `Config::parse` (serde and the checks of
//! `validate`). A config that is accepted must also build what the daemon builds from it at
//! start without a panic: the engine and, when ports are set, the tap. (The validator's rules
//! depend only on the paranoia level, which `validate` bounds; compiling them per input would
//! cost a thousand times the parse.)
#![no_main]

use std::path::Path;

use guard_core::engine::Engine;
use guard_core::tap::Tap;
use guard_daemon::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("guard.toml")) else {
        return;
    };
    let _engine = Engine::new(&config.engine);
    if !config.tap.http_ports.is_empty() {
        let _tap = Tap::new(&config.tap);
    }
});
