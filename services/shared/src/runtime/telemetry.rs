//! Logging and tracing: a `RUST_LOG`-style filter that follows the live `log.level`,
//! human-readable lines on a terminal or JSON, each with time, level, target and file:line; and
//! the OpenTelemetry layer that turns `tracing` spans into exported spans.
//!
//! Every line logged while a request is served carries its `trace_id`, `span_id` and
//! `request_id`: in the pretty format as fields of the `grpc.server` span shown before the
//! message, in JSON as top-level fields (so a log collector can join lines across services).
//! The log filter applies to the log lines only, so `log.level=warn` does not switch tracing off.

use std::{
    fmt,
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use tokio::sync::watch;
use tracing::{Event, Level, Subscriber, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{DynFilterFn, FilterExt as _, LevelFilter},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{self, JsonFields, Writer},
    },
    layer::{self, Filter, SubscriberExt},
    registry::LookupSpan,
    reload,
    util::SubscriberInitExt,
};

use crate::{
    config::{LogFormat, LogSettings},
    discovery::{
        context::CallContext,
        trace::{self, Tracing},
    },
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

/// The most verbose level `filter` lets through anywhere, as a number for an atomic (see
/// [`level_filter`]); unknown counts as everything.
fn most_verbose(filter: &EnvFilter) -> u8 {
    match filter.max_level_hint().unwrap_or(LevelFilter::TRACE) {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// The level of a number from [`most_verbose`].
fn level_filter(number: u8) -> LevelFilter {
    match number {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
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

/// What the OpenTelemetry layer takes beyond [`TRACE_FILTER`]: warnings and errors among events,
/// and every span except those opened while serving an unsampled call, which would be built only
/// to be dropped (see `discovery::context`). The span decision depends on the call, so it is
/// made per span; the event decision is per call site, once.
fn traced<S: Subscriber>() -> impl Filter<S> {
    DynFilterFn::new(|meta, _| {
        if meta.is_span() {
            !CallContext::spans_skipped()
        } else {
            *meta.level() <= TRACE_EVENTS
        }
    })
    .with_callsite_filter(|meta| {
        if meta.is_span() {
            Interest::sometimes()
        } else if *meta.level() <= TRACE_EVENTS {
            Interest::always()
        } else {
            Interest::never()
        }
    })
}

/// The global gate, innermost in the stack: a span opened inside a call whose spans are skipped
/// (see [`traced`]) is not built at all unless the log lines may show it (`logs`: the most verbose
/// level the live log filter lets through). The per-layer filters alone cannot do this: a span
/// that every per-layer filter refuses is still created, entered and closed in the registry
/// (about a third of the tracing cost left per call when only they refused it).
///
/// Its per-call-site answer must not be looser than the layers': a global filter that does not say
/// `never` makes every call site the layers refuse a check per use (the HTTP/2 library's trace
/// spans, on every frame). So it says `never` to what neither the log lines (by `logs`) nor the
/// trace layer (info spans, warnings) could take; `logs` changing rebuilds these answers (the
/// reload does).
fn gate<S, F>(logs: F) -> impl layer::Layer<S>
where
    S: Subscriber,
    F: Fn() -> LevelFilter + Clone + Send + Sync + 'static,
{
    let per_call = logs.clone();
    DynFilterFn::new(move |meta, _| {
        !meta.is_span() || !CallContext::spans_skipped() || *meta.level() <= per_call()
    })
    .with_callsite_filter(move |meta| {
        let level = *meta.level();
        if meta.is_span() && level <= Level::INFO {
            Interest::sometimes()
        } else if level <= logs() || (!meta.is_span() && level <= TRACE_EVENTS) {
            // No opinion: the layers' own filters decide.
            Interest::always()
        } else {
            Interest::never()
        }
    })
}

/// Installs the process's subscriber: the log lines, and `tracing`'s spans as OpenTelemetry spans
/// of `tracing`. `RUST_LOG`, when set, wins over `log.level`.
pub(super) fn init(settings: &LogSettings, tracing: &Tracing) -> Result<LogHandle, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => filter(&directives)?,
        _ => filter(&settings.level)?,
    };
    // The most verbose level the log lines let through, following the live filter (for `gate`).
    let logs = Arc::new(AtomicU8::new(most_verbose(&filter)));
    let (filter, handle) = reload::Layer::new(filter);
    let followed = Arc::clone(&logs);
    let reload: Arc<Reload> = Arc::new(move |new| {
        followed.store(most_verbose(&new), Ordering::Relaxed);
        handle.modify(|current| *current = new)
    });
    let otel = tracing
        .layer()
        .with_filter(EnvFilter::new(TRACE_FILTER).and(traced()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_file(true)
        .with_line_number(true);
    // The gate innermost, beside the registry (see `gate`).
    let registry = tracing_subscriber::registry()
        .with(gate(move || level_filter(logs.load(Ordering::Relaxed))))
        .with(otel);
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
        LogFormat::Pretty => {
            let ansi = std::io::stderr().is_terminal();
            let pretty = format::format()
                .with_ansi(ansi)
                .with_target(true)
                .with_file(true)
                .with_line_number(true);
            registry
                .with(
                    fmt.with_ansi(ansi)
                        .event_format(WithCallIds(pretty))
                        .with_filter(filter),
                )
                .try_init()?;
        }
    }
    Ok(LogHandle(reload))
}

/// Lines as `tracing_subscriber` writes them; a line of a call none of whose spans was built (its
/// trace is not sampled and the log level leaves out spans) gets the call's ids at its end, as the
/// `grpc.server` span would have shown them.
struct WithCallIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithCallIds<F>
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
        let in_span = ctx.event_scope().is_some();
        let ids = (!in_span).then(trace::current_log_ids).flatten();
        let Some((request_id, trace)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        write!(writer, "{} request_id={request_id}", line.trim_end())?;
        if let Some((trace_id, span_id)) = trace {
            write!(writer, " trace_id={trace_id} span_id={span_id}")?;
        }
        writeln!(writer)
    }
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
        let Ok(serde_json::Value::Object(mut object)) =
            serde_json::from_str::<serde_json::Value>(line.trim_end())
        else {
            return writer.write_str(&line);
        };
        for span in ctx.event_scope().into_iter().flatten() {
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
        // No span of the call was built (its trace is not sampled and the log level leaves out
        // spans): the ids come from the call's context.
        if !object.contains_key("request_id")
            && let Some((request_id, trace)) = trace::current_log_ids()
        {
            object.insert("request_id".to_owned(), request_id.as_str().into());
            if let Some((trace_id, span_id)) = trace {
                object.insert("trace_id".to_owned(), trace_id.into());
                object.insert("span_id".to_owned(), span_id.into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_subscriber::{Layer, registry::Registry};

    use super::*;

    /// Counts the spans it is given.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Count {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn call(sampled: bool) -> CallContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let trace = SpanContext::new(
            TraceId::from(3),
            SpanId::from(4),
            flags,
            false,
            TraceState::default(),
        );
        CallContext::default().with_trace(Some(trace), !sampled)
    }

    #[tokio::test]
    async fn spans_inside_an_unsampled_call_are_not_built() {
        let built = Arc::new(AtomicUsize::new(0));
        // As `init` stacks them: the gate innermost, the traced layer's own filter outside it.
        let subscriber = Registry::default().with(gate(|| LevelFilter::OFF)).with(
            Count(Arc::clone(&built)).with_filter(EnvFilter::new(TRACE_FILTER).and(traced())),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        let open = || {
            let span = tracing::info_span!("inner");
            span.is_disabled()
        };
        let disabled = call(false).scope(async { open() }).await;
        assert_eq!(built.load(Ordering::SeqCst), 0);
        assert!(disabled);
        assert!(!call(true).scope(async { open() }).await);
        assert!(!open(), "outside any call");
        assert_eq!(built.load(Ordering::SeqCst), 2);
        // The gate leaves alone what no layer wants (it must not make it a check per call).
        assert!(tracing::trace_span!("noise").is_disabled());
        assert!(
            call(true)
                .scope(async { tracing::debug_span!("noise").is_disabled() })
                .await
        );
    }

    #[tokio::test]
    async fn a_span_the_log_lines_want_is_built_for_them_but_not_traced() {
        let traced_spans = Arc::new(AtomicUsize::new(0));
        let subscriber = Registry::default().with(gate(|| LevelFilter::INFO)).with(
            Count(Arc::clone(&traced_spans))
                .with_filter(EnvFilter::new(TRACE_FILTER).and(traced())),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        let built = call(false)
            .scope(async { !tracing::info_span!("inner").is_disabled() })
            .await;
        assert!(built);
        assert_eq!(traced_spans.load(Ordering::SeqCst), 0);
    }
}
