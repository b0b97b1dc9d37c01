//! A real Jaeger (v2, in-memory storage) for tracing tests: the `jaeger` binary of the Go module
//! `github.com/jaegertracing/jaeger`, pinned in `crates/test-support/jaeger/go.mod` and built by
//! `scripts/build-jaeger.sh` (never by the tests).
//!
//! Each [`Jaeger`] is one process on free loopback ports: an OTLP/gRPC receiver
//! ([`Jaeger::otlp_endpoint`]) and the query HTTP API ([`Jaeger::trace`]), which works without the
//! UI's assets. It is killed when dropped.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::http;

/// Environment variable naming the binary, overriding [`DEFAULT_BIN`].
pub const BIN_ENV: &str = "SHIPPY_JAEGER_BIN";

/// Where `scripts/build-jaeger.sh` puts the binary by default.
pub const DEFAULT_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tools/jaeger");

/// Longest wait for the query API and the receiver to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary; an error explaining how to build it when it is missing.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(BIN_ENV).map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
    if !path.is_file() {
        bail!(
            "Jaeger is not built: {} does not exist. Build it with `bash scripts/build-jaeger.sh` \
             (needs Go and the Go module proxy), or set {BIN_ENV} to an existing binary. Tracing \
             tests never skip.",
            path.display()
        );
    }
    Ok(path)
}

/// A Jaeger process and its configuration directory.
#[derive(Debug)]
pub struct Jaeger {
    dir: tempfile::TempDir,
    child: Child,
    otlp_port: u16,
    query_port: u16,
}

impl Jaeger {
    /// Starts Jaeger on free loopback ports and waits until both its query API and its OTLP
    /// receiver answer. Fails (never skips) when the binary is missing.
    pub fn start() -> anyhow::Result<Self> {
        let binary = binary()?;
        let mut last = None;
        // A free port can be taken by another process before Jaeger binds it: try again.
        for _ in 0..3 {
            match Self::launch(&binary) {
                Ok(jaeger) => return Ok(jaeger),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("Jaeger did not start")))
    }

    fn launch(binary: &PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shippy-jaeger-")
            .tempdir()
            .context("creating Jaeger's directory")?;
        let (otlp_port, query_port, grpc_port) =
            (http::free_port()?, http::free_port()?, http::free_port()?);
        let config = dir.path().join("config.yaml");
        fs::write(&config, config_yaml(otlp_port, query_port, grpc_port))?;
        let log = fs::File::create(dir.path().join("jaeger.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut jaeger = Self {
            dir,
            child,
            otlp_port,
            query_port,
        };
        jaeger.wait_ready()?;
        Ok(jaeger)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Jaeger exited with {status} while starting. Log:\n{}",
                    self.log()
                );
            }
            let query = http::get(
                &self.query_address(),
                "/api/services",
                Duration::from_secs(2),
            );
            let otlp = std::net::TcpStream::connect(("127.0.0.1", self.otlp_port));
            if matches!(query, Ok((200, _))) && otlp.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Jaeger did not answer within {READY_TIMEOUT:?}. Log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`, for `SHIPPY_TELEMETRY__OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// `127.0.0.1:PORT` of the query HTTP API.
    pub fn query_address(&self) -> String {
        format!("127.0.0.1:{}", self.query_port)
    }

    /// What Jaeger logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("jaeger.log")).unwrap_or_default()
    }

    /// The trace `trace_id` as the query API returns it (`data[0]`: `spans`, `processes`), or
    /// `None` while Jaeger does not have it.
    pub fn trace(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let (status, body) = http::get(
            &self.query_address(),
            &format!("/api/traces/{trace_id}"),
            Duration::from_secs(5),
        )?;
        match status {
            200 => {
                let mut answer: serde_json::Value =
                    serde_json::from_str(&body).context("Jaeger's answer is not JSON")?;
                Ok(answer
                    .get_mut("data")
                    .and_then(|data| data.get_mut(0))
                    .map(serde_json::Value::take))
            }
            404 => Ok(None),
            other => bail!("Jaeger answered {other} for trace {trace_id}: {body}"),
        }
    }

    /// The ids of the traces Jaeger holds with a span of `service` (at most 100, newest first).
    pub fn trace_ids_of(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = http::get(
            &self.query_address(),
            &format!("/api/traces?service={service}&limit=100&lookback=1h"),
            Duration::from_secs(5),
        )?;
        match status {
            200 => {
                let answer: serde_json::Value =
                    serde_json::from_str(&body).context("Jaeger's answer is not JSON")?;
                Ok(answer["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|trace| trace["traceID"].as_str().map(str::to_owned))
                    .collect())
            }
            // Jaeger has seen no span of that service yet.
            404 => Ok(Vec::new()),
            other => bail!("Jaeger answered {other} for the traces of {service}: {body}"),
        }
    }

    /// Waits until the trace `trace_id` is in Jaeger and `done` holds for it (spans arrive in
    /// batches, from several processes); returns it, or fails after `within` with what was there.
    pub fn wait_for_trace(
        &self,
        trace_id: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let trace = self.trace(trace_id)?;
            if let Some(trace) = &trace
                && done(trace)
            {
                return Ok(trace.clone());
            }
            if Instant::now() >= deadline {
                bail!("trace {trace_id} not complete after {within:?}; Jaeger has: {trace:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Jaeger log ---\n{}", self.log());
        }
    }
}

/// Jaeger v2's configuration (an OpenTelemetry Collector file): OTLP/gRPC in, memory storage,
/// the query API; its own telemetry off so it opens no other port.
fn config_yaml(otlp: u16, query: u16, grpc: u16) -> String {
    format!(
        "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
    )
}

/// One span of a trace from the query API, reduced to what tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Its id.
    pub id: String,
    /// Its parent's id (`CHILD_OF` reference), if any.
    pub parent: Option<String>,
    /// Its name.
    pub operation: String,
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// Its tags as text (`key` → value).
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The spans of `trace` (a value from [`Jaeger::trace`]).
pub fn spans(trace: &serde_json::Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|span| {
            let text = |value: &serde_json::Value| match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Span {
                id: text(&span["spanID"]),
                parent: span["references"].as_array().and_then(|references| {
                    references
                        .iter()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .map(|r| text(&r["spanID"]))
                }),
                operation: text(&span["operationName"]),
                service: processes[text(&span["processID"])]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                tags: span["tags"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|tag| (text(&tag["key"]), text(&tag["value"])))
                    .collect(),
            }
        })
        .collect()
}

/// Whether `span` descends from `ancestor` in `spans` (the spans of one trace).
pub fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent.clone();
    while let Some(id) = parent {
        if id == ancestor.id {
            return true;
        }
        parent = spans
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.parent.clone());
    }
    false
}
