//! Logging and tracing: a `RUST_LOG`-style filter that follows the live `log.level`,
//! human-readable lines on a terminal or JSON, each with time, level, target and file:line; and
//! the OpenTelemetry layer that turns `tracing` spans into exported spans.
//!
//! Every line logged while a request is served carries its `trace_id`, `span_id` and
//! `request_id`: in the pretty format as fields of the `grpc.server` span shown before the
//! message, in JSON as top-level fields (so a log collector can join lines across services).
//! The log filter applies to the log lines only, so `log.level=warn` does not switch tracing off.

use std::{fmt, io::IsTerminal, sync::Arc};

use tokio::sync::watch;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{FilterExt as _, filter_fn},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{self, JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    reload,
    util::SubscriberInitExt,
};

use crate::{
    config::{LogFormat, LogSettings},
    discovery::trace::Tracing,
};

/// What spans the OpenTelemetry layer records: ours and other crates' at info and above (the
/// HTTP/2 and gRPC libraries' own debug spans would only add noise to every trace).
const TRACE_FILTER: &str = "info";
/// The events the OpenTelemetry layer attaches to spans: warnings and errors. Info events (one or
/// two per call) would cost an attribute list per call on every span, sampled or not, for lines
/// the logs already hold.
const TRACE_EVENTS: Level = Level::WARN;

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

type Reload = dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync;

/// Changes the active log filter of the process's subscriber.
#[derive(Clone)]
pub(super) struct LogHandle(Arc<Reload>);

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogHandle")
    }
}

impl LogHandle {
    /// Replaces the filter; an invalid directive is refused and the old filter stays.
    pub(super) fn set_level(&self, level: &str) -> Result<(), TelemetryError> {
        let filter = filter(level)?;
        Ok((self.0)(filter)?)
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

/// Installs the process's subscriber: the log lines, and `tracing`'s spans as OpenTelemetry spans
/// of `tracing`. `RUST_LOG`, when set, wins over `log.level`.
pub(super) fn init(settings: &LogSettings, tracing: &Tracing) -> Result<LogHandle, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => filter(&directives)?,
        _ => filter(&settings.level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let reload: Arc<Reload> = Arc::new(move |new| handle.modify(|current| *current = new));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracing.tracer("shippy"))
        // Busy/idle timing reads the clock on every poll of every instrumented future, and thread
        // attributes allocate per span; a trace is read for its call tree and durations, which
        // stay. (Measured with `make bench`: see the README's hot-path figures.)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(EnvFilter::new(TRACE_FILTER).and(filter_fn(|meta| {
            meta.is_span() || *meta.level() <= TRACE_EVENTS
        })));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_file(true)
        .with_line_number(true);
    let registry = tracing_subscriber::registry().with(otel);
    match settings.format {
        LogFormat::Json => {
            let json = format::format()
                .json()
                .flatten_event(true)
                .with_target(true)
                .with_file(true)
                .with_line_number(true);
            let fmt = fmt
                .fmt_fields(JsonFields::new())
                .event_format(WithRequestIds(json))
                .with_filter(filter);
            registry.with(fmt).try_init()?;
        }
        LogFormat::Pretty => registry
            .with(
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init()?,
    }
    Ok(LogHandle(reload))
}

/// The request fields every JSON line lifts to the top level from the innermost span that has
/// them (the `grpc.server` span records all three).
const REQUEST_FIELDS: [&str; 3] = ["trace_id", "span_id", "request_id"];

/// JSON lines as `tracing_subscriber` writes them, plus [`REQUEST_FIELDS`] as top-level fields.
struct WithRequestIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithRequestIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let parsed = serde_json::from_str::<serde_json::Value>(line.trim_end());
        let (Ok(serde_json::Value::Object(mut object)), Some(scope)) = (parsed, ctx.event_scope())
        else {
            return writer.write_str(&line);
        };
        for span in scope {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                continue;
            };
            let Ok(serde_json::Value::Object(fields)) =
                serde_json::from_str::<serde_json::Value>(&fields.fields)
            else {
                continue;
            };
            for key in REQUEST_FIELDS {
                if !object.contains_key(key)
                    && let Some(value) = fields.get(key)
                {
                    object.insert(key.to_owned(), value.clone());
                }
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(object))
    }
}
