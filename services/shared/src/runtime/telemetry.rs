//! Logging: a `RUST_LOG`-style filter that follows the live `log.level`, human-readable lines on a
//! terminal or JSON, each with time, level, target and file:line.

use std::io::IsTerminal;

use tokio::sync::watch;
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

use crate::config::{LogFormat, LogSettings};

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub(super) enum TelemetryError {
    /// `log.level` (or `RUST_LOG`) is not a valid filter.
    #[error("invalid log.level {level:?}: {source}")]
    Filter {
        /// The refused filter.
        level: String,
        /// Why.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was installed already.
    #[error("logging is already set up: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
    /// The subscriber is gone.
    #[error("cannot change the log filter: {0}")]
    Reload(#[from] reload::Error),
}

fn filter(level: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(level).map_err(|source| TelemetryError::Filter {
        level: level.to_owned(),
        source,
    })
}

/// Changes the active log filter of the process's subscriber.
#[derive(Debug, Clone)]
pub(super) struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    /// Replaces the filter; an invalid directive is refused and the old filter stays.
    pub(super) fn set_level(&self, level: &str) -> Result<(), TelemetryError> {
        let filter = filter(level)?;
        Ok(self.0.modify(|current| *current = filter)?)
    }

    /// Applies every change of `log.level` in `settings` until their sender is gone.
    pub(super) fn follow(self, mut settings: watch::Receiver<LogSettings>) {
        settings.mark_unchanged();
        tokio::spawn(async move {
            while settings.changed().await.is_ok() {
                let level = settings.borrow_and_update().level.clone();
                match self.set_level(&level) {
                    Ok(()) => tracing::info!(%level, "log level changed"),
                    Err(error) => tracing::error!(%error, "log level change refused"),
                }
            }
        });
    }
}

/// Installs the process's subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub(super) fn init(settings: &LogSettings) -> Result<LogHandle, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => filter(&directives)?,
        _ => filter(&settings.level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_file(true)
        .with_line_number(true);
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init()?,
        LogFormat::Pretty => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init()?,
    }
    Ok(LogHandle(handle))
}
