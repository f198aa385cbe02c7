//! `guard reload` and SIGHUP: the configuration file guard was started with is read and
//! validated again, and what can change at run time is applied without a ban or a connection
//! lost: the `[validator]` and `[engine]` sections (rules, weights, thresholds, the mode). A
//! changed key anywhere else keeps its old value until a restart, and the answer names it. A
//! file that does not read or validate changes nothing, and the answer says why (file, line,
//! key). `guard mode` switches the engine's mode at run time; the choice is kept in the state
//! database until a start or reload sees a configuration whose `engine.mode` differs from the
//! one in effect when it was made.
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use tracing::{info, warn};

use crate::config::Config;
use crate::control::proto::{ModeSet, Reloaded};
use crate::engine::Mode;
use crate::store::ModeOverride;

use super::Shared;

/// The sections applied at run time by a reload; every other changed key needs a restart.
const LIVE_SECTIONS: &[&str] = &["engine", "validator"];

/// What the daemon needs to read its configuration again.
pub(super) struct Reloader {
    /// The file given with `--config`; `None` when guard runs on the defaults.
    path: Option<PathBuf>,
    /// The file's keys as last applied (an empty table for the defaults).
    applied: Mutex<toml::Table>,
    /// One reload at a time.
    busy: Mutex<()>,
}

/// Errors of a reload or a mode change: each a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("guard was started without --config, so there is no file to reload")]
    NoFile,
    #[error("the configuration was not reloaded; the old one stays in effect: {0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// `enforce` or `shadow`.
#[must_use]
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

fn parse_mode(text: &str) -> Option<Mode> {
    match text {
        "enforce" => Some(Mode::Enforce),
        "shadow" => Some(Mode::Shadow),
        _ => None,
    }
}

impl Reloader {
    /// Reads the file's keys as they were at start (a file that no longer reads counts as
    /// empty: its keys all show as changed on the first reload).
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        let applied = path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.parse::<toml::Table>().ok())
            .unwrap_or_default();
        Self {
            path,
            applied: Mutex::new(applied),
            busy: Mutex::new(()),
        }
    }
}

/// The mode to start with: `engine.mode`, unless `guard mode` chose another one while the
/// configuration's mode was the same as now. An override made under another `engine.mode` is
/// forgotten.
pub(super) fn start_mode(store: &crate::store::Store, config: &Config) -> Mode {
    let config_mode = mode_name(config.engine.mode);
    match store.mode_override() {
        Ok(Some(o)) if o.config_mode == config_mode => {
            if let Some(m) = parse_mode(&o.mode) {
                info!(
                    mode = o.mode,
                    config_mode, "engine mode set by `guard mode` (kept until engine.mode changes)"
                );
                return m;
            }
            forget_override(store);
        }
        Ok(Some(o)) => {
            info!(
                was = o.mode,
                config_mode,
                "engine.mode changed since `guard mode` was used: the configuration's mode applies"
            );
            forget_override(store);
        }
        Ok(None) => {}
        Err(e) => warn!("the engine mode set by `guard mode` was not read: {e}"),
    }
    config.engine.mode
}

fn forget_override(store: &crate::store::Store) {
    if let Err(e) = store.set_mode_override(None) {
        warn!("the engine mode set by `guard mode` was not forgotten: {e}");
    }
}

/// Answers `guard reload` and `guard mode`.
pub(super) fn handle(shared: &Shared, req: crate::control::Request) -> crate::control::Response {
    use crate::control::{Request, Response};
    match req {
        Request::Reload => reload(shared).map_or_else(|e| Response::failed(&e), Response::ok),
        Request::Mode { mode } => {
            set_mode(shared, &mode).map_or_else(|e| Response::failed(&e), Response::ok)
        }
        _ => Response::Err(format!("{} is not a reload request", req.command())),
    }
}

/// Switches the engine's mode and records the choice with the configuration's mode.
pub(super) fn set_mode(shared: &Shared, mode: &str) -> Result<ModeSet, ReloadError> {
    let Some(new) = parse_mode(mode) else {
        return Err(ReloadError::Invalid(format!(
            "unknown mode {mode:?}: use `enforce` or `shadow`"
        )));
    };
    let config_mode = mode_name(
        shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .engine
            .mode,
    );
    shared.store.set_mode_override(Some(&ModeOverride {
        mode: mode_name(new).to_owned(),
        config_mode: config_mode.to_owned(),
    }))?;
    let previous = mode_name(shared.judge.mode());
    shared.judge.set_mode(new);
    info!(
        mode = mode_name(new),
        previous, config_mode, "engine mode switched by `guard mode`"
    );
    Ok(ModeSet {
        mode: mode_name(new).to_owned(),
        previous: previous.to_owned(),
        config_mode: config_mode.to_owned(),
    })
}

/// Reads the file again and applies it (see the module documentation).
pub(super) fn reload(shared: &Shared) -> Result<Reloaded, ReloadError> {
    let reloader = &shared.reloader;
    let _busy = reloader.busy.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(path) = reloader.path.clone() else {
        return Err(ReloadError::NoFile);
    };
    let invalid = |e: &(dyn std::error::Error + 'static)| {
        ReloadError::Invalid(crate::control::proto::error_chain(e))
    };
    let new = Config::load(&path).map_err(|e| invalid(&e))?;
    // Loaded: the text reads as TOML.
    let table: toml::Table = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let mut changed = Vec::new();
    {
        let old = reloader
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        diff("", &old, &table, &mut changed);
    }
    changed.sort();
    let (applied, need_restart): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| {
        LIVE_SECTIONS
            .iter()
            .any(|s| k == s || k.starts_with(&format!("{s}.")))
    });
    // The mode: the override lasts while the file's mode is the one it was made under.
    let mut override_ended = false;
    let mode = match shared.store.mode_override() {
        Ok(Some(o)) if o.config_mode == mode_name(new.engine.mode) => {
            parse_mode(&o.mode).unwrap_or(new.engine.mode)
        }
        Ok(Some(_)) => {
            forget_override(&shared.store);
            override_ended = true;
            new.engine.mode
        }
        Ok(None) => new.engine.mode,
        Err(e) => {
            warn!("the engine mode set by `guard mode` was not read: {e}");
            new.engine.mode
        }
    };
    shared
        .judge
        .reconfigure(&new.validator, &new.engine, mode)
        .map_err(|e| invalid(&e))?;
    {
        let mut live = shared.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.validator = new.validator.clone();
        live.engine = new.engine.clone();
        // Everything else keeps its start value until a restart.
    }
    *reloader
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner) =
        keep_restart_keys(table, &need_restart, &reloader.applied);
    for key in &applied {
        info!(file = %path.display(), key, "reload: applied");
    }
    for key in &need_restart {
        warn!(
            file = %path.display(),
            key,
            "reload: changed, but needs a restart; the old value stays in effect"
        );
    }
    info!(
        file = %path.display(),
        applied = applied.len(),
        need_restart = need_restart.len(),
        mode = mode_name(mode),
        "configuration reloaded"
    );
    Ok(Reloaded {
        file: path,
        applied,
        need_restart,
        mode: mode_name(mode).to_owned(),
        override_ended,
    })
}

/// The keys now in effect: the new file's, except that a key needing a restart keeps its old
/// value (so it is named again on the next reload until guard restarts).
fn keep_restart_keys(
    mut table: toml::Table,
    need_restart: &[String],
    old: &Mutex<toml::Table>,
) -> toml::Table {
    let old = old.lock().unwrap_or_else(PoisonError::into_inner);
    for key in need_restart {
        let parts: Vec<&str> = key.split('.').collect();
        set_path(&mut table, &parts, get_path(&old, &parts).cloned());
    }
    table
}

fn get_path<'a>(table: &'a toml::Table, parts: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = parts.split_first()?;
    let v = table.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    get_path(v.as_table()?, rest)
}

fn set_path(table: &mut toml::Table, parts: &[&str], value: Option<toml::Value>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(v) => {
                table.insert((*first).to_owned(), v);
            }
            None => {
                table.remove(*first);
            }
        }
        return;
    }
    let entry = table
        .entry((*first).to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(t) = entry.as_table_mut() {
        set_path(t, rest, value);
    }
}

/// The dotted keys whose values differ between `old` and `new` (tables compared key by key).
fn diff(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (old.get(k), new.get(k)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => diff(&name, a, b, out),
            (a, b) if a == b => {}
            _ => out.push(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_each_changed_key_and_keeps_restart_keys_old() {
        let old: toml::Table = "[engine]\nmode = \"shadow\"\n[engine.grey]\nthreshold = 5\n\
                                [xdp]\ninterfaces = [\"a\"]\n"
            .parse()
            .unwrap();
        let new: toml::Table = "[engine]\nmode = \"enforce\"\n[engine.grey]\nthreshold = 5\n\
                                [xdp]\ninterfaces = [\"b\"]\n[daemon]\nstate_dir = \"/x\"\n"
            .parse()
            .unwrap();
        let mut out = Vec::new();
        diff("", &old, &new, &mut out);
        out.sort();
        assert_eq!(out, ["daemon", "engine.mode", "xdp.interfaces"]);
        let kept = keep_restart_keys(
            new,
            &["daemon".into(), "xdp.interfaces".into()],
            &Mutex::new(old.clone()),
        );
        let mut again = Vec::new();
        diff("", &old, &kept, &mut again);
        assert_eq!(again, ["engine.mode"]);
    }

    /// The override lasts across a restart while `engine.mode` is unchanged, and ends (and is
    /// forgotten) when the file's mode changes.
    #[test]
    fn the_mode_override_lasts_until_the_config_mode_changes() {
        let dir = std::env::temp_dir().join(format!("guard-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::Store::open(&dir).unwrap();
        let mut config = Config::default();
        config.engine.mode = Mode::Shadow;
        store
            .set_mode_override(Some(&ModeOverride {
                mode: "enforce".into(),
                config_mode: "shadow".into(),
            }))
            .unwrap();
        assert_eq!(start_mode(&store, &config), Mode::Enforce);
        assert!(store.mode_override().unwrap().is_some());
        config.engine.mode = Mode::Enforce;
        assert_eq!(start_mode(&store, &config), Mode::Enforce);
        assert!(store.mode_override().unwrap().is_none());
        config.engine.mode = Mode::Shadow;
        assert_eq!(start_mode(&store, &config), Mode::Shadow);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
