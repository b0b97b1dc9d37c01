//! The admin HTTP port of a service (`admin.*`): `/metrics` in the Prometheus text format,
//! `/livez` and `/readyz` for plain-HTTP probes (a kubelet, a load balancer).
//!
//! Metrics are recorded through the `metrics` facade where things happen (the server stack, the
//! balanced channel, registration) and rendered here. The facade's recorder is process-wide by
//! design: [`install_recorder`] installs it once, from a service binary's `main`; a process without
//! one (the CLI, a test running services in-process) records nothing and pays nothing. `/metrics`
//! also carries the standard `process_*` metrics, read from `/proc` at each scrape, and the size
//! of the async runtime (`shippy_runtime_worker_threads`). A thread started with the recorder folds
//! histogram samples into their buckets every second, scraped or not ([`UPKEEP_PERIOD`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::watch};

/// Histogram buckets of every `*_seconds` metric: 0.5 ms to 10 s, for calls between processes on
/// one network.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The git revision the binary was built from (`SHIPPY_REVISION` at build time).
const REVISION: &str = match option_env!("SHIPPY_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// The process's renderer; set once by [`install_recorder`].
static RENDERER: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder folds the histogram samples recorded since the last fold into their
/// buckets. It keeps every sample until it folds (8 bytes each, plus the blocks that hold them),
/// and folds only when asked: at a scrape, and here. Without this a service that nobody scrapes
/// grew for as long as it served (8 MiB per 200 000 `FindAvailable` calls, measured), and one
/// scraped every 15 s held 15 s of samples. Each second the backlog is one second of calls.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

/// Installs the process's metrics recorder (once; later calls do nothing), and starts the thread
/// that folds its histogram samples every [`UPKEEP_PERIOD`].
pub(super) fn install_recorder() {
    if RENDERER.get().is_some() {
        return;
    }
    let builder = match PrometheusBuilder::new().set_buckets(BUCKETS) {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "metrics buckets refused; no metrics");
            return;
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = RENDERER.set(handle.clone());
        // A thread of its own, not a task: a fold takes about 8 ns a sample (0.5-0.9 ms for a
        // second of 40 000 calls that record two each), which would stall the calls on its worker.
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_PERIOD);
                    handle.run_upkeep();
                }
            });
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start the metrics upkeep thread: histograms are folded at each scrape only");
        }
    }
}

/// Sets the gauges that describe the binary: `shippy_build_info{service, version, revision} 1`.
pub(super) fn record_build_info(service: &'static str, version: &'static str) {
    metrics::gauge!(
        "shippy_build_info",
        "service" => service,
        "version" => version,
        "revision" => REVISION,
    )
    .set(1.0);
}

/// What `/readyz` answers from: the service's readiness conditions, and whether it is stopping.
#[derive(Debug, Clone)]
pub(super) struct Readiness {
    gates: Vec<watch::Receiver<bool>>,
    stopping: Arc<AtomicBool>,
}

impl Readiness {
    /// Ready while every gate is open and [`Readiness::stop`] was not called.
    pub(super) fn new(gates: Vec<watch::Receiver<bool>>) -> Self {
        Self {
            gates,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on not ready (the service is shutting down).
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && self.gates.iter().all(|gate| *gate.borrow())
    }
}

/// Serves the admin endpoints on `listener` until the task is aborted.
pub(super) fn serve(listener: TcpListener, readiness: Readiness) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "admin port: accept failed");
                    continue;
                }
            };
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = answer(request.method(), request.uri().path(), &readiness);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%error, "admin port: connection failed");
                }
            });
        }
    })
}

/// The local address to advertise for the admin port: the gRPC advertised host with `port`.
pub(super) fn advertised(grpc_advertised: &str, local: SocketAddr) -> String {
    let host = grpc_advertised
        .rsplit_once(':')
        .map_or(grpc_advertised, |(host, _)| host);
    format!("{host}:{}", local.port())
}

fn answer(method: &Method, path: &str, readiness: &Readiness) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match path {
        "/metrics" => {
            let mut body = RENDERER.get().map_or_else(String::new, |handle| {
                handle.run_upkeep();
                handle.render()
            });
            body.push_str(&process_metrics());
            text(StatusCode::OK, body)
        }
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /livez or /readyz\n".into(),
        ),
    }
}

/// Clock ticks per second of the times in `/proc` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The standard `process_*` metrics (as the Prometheus client libraries name them), from `/proc`.
/// Whatever cannot be read is left out.
fn process_metrics() -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, so 11 and 12 after the name
    // (state is field 3, index 0 here); starttime is field 22.
    let field = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (user + system) / TICKS_PER_SECOND,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
    {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            entries.count() as f64,
        );
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<f64>().ok())
    {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        metric(
            "shippy_runtime_worker_threads",
            "gauge",
            "Worker threads of the async runtime (server.worker_threads).",
            runtime.metrics().num_workers() as f64,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|secs| secs.trim().parse::<f64>().ok());
    if let (Some(boot), Some(start)) = (boot, field(19)) {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS_PER_SECOND,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing in {text}"));
            assert!(value >= 0.0, "{name} = {value}");
        }
    }

    #[test]
    fn probes_follow_the_gates_and_shutdown() {
        let (open, gate) = watch::channel(false);
        let readiness = Readiness::new(vec![gate]);
        let status = |r: &Readiness, path| answer(&Method::GET, path, r).status();
        assert_eq!(status(&readiness, "/livez"), StatusCode::OK);
        assert_eq!(
            status(&readiness, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        open.send_replace(true);
        assert_eq!(status(&readiness, "/readyz"), StatusCode::OK);
        readiness.stop();
        assert_eq!(
            status(&readiness, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(&readiness, "/nope"), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_admin_address_uses_the_advertised_host() {
        let local: SocketAddr = "0.0.0.0:9100".parse().expect("address");
        assert_eq!(advertised("10.1.2.3:50051", local), "10.1.2.3:9100");
        assert_eq!(advertised("[::1]:50051", local), "[::1]:9100");
    }
}
