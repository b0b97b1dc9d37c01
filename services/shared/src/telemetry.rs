//! Logging: a `RUST_LOG`-style filter (changeable at run time), human-readable lines on a terminal or
//! JSON, each with time, level, target and file:line.

use std::{io::IsTerminal, sync::OnceLock};

use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

use crate::settings::{LogFormat, LogSettings};

/// Changes the active log filter of a running process.
#[derive(Debug, Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    /// Replaces the filter; an invalid directive is rejected and the old filter stays.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(level).map_err(|e| format!("invalid log.level {level:?}: {e}"))?;
        self.0
            .modify(|current| *current = filter)
            .map_err(|e| e.to_string())
    }
}

static HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// Changes the filter of the subscriber installed by [`init`] (does nothing before).
pub fn set_level(level: &str) -> Result<(), String> {
    match HANDLE.get() {
        Some(handle) => handle.set_level(level),
        None => EnvFilter::try_new(level)
            .map(drop)
            .map_err(|e| format!("invalid log.level {level:?}: {e}")),
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(settings: &LogSettings) -> Result<LogHandle, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(&settings.level),
    }
    .map_err(|e| format!("invalid log.level {:?}: {e}", settings.level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_file(true)
        .with_line_number(true);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Pretty => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
    };
    result.map_err(|e| e.to_string())?;
    let handle = LogHandle(handle);
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}
