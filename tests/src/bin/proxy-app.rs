//! The reverse proxy's test app on its own (`proxy-app ADDR [THREADS]`), for trying guard's
//! proxy by hand: the routes of `guard_tests::proxy_app`, until killed.
use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .context("usage: proxy-app ADDR [THREADS]")?
        .parse()
        .context("ADDR: ip:port")?;
    let threads = args
        .next()
        .map_or(Ok(2), |t| t.parse())
        .context("THREADS")?;
    let app = guard_tests::proxy_app::start(None, addr, threads)?;
    println!("test app on {}", app.addr);
    loop {
        std::thread::park();
    }
}
