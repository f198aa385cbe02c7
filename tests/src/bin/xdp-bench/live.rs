//! Part 2 (placeholder while part 1 is brought up).
use crate::report::Report;
pub fn run(_report: &mut Report) -> anyhow::Result<()> {
    Ok(())
}
