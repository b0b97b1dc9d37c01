//! A real Prometheus (Debian's `prometheus` package, installed by `scripts/install-prometheus.sh`)
//! for metrics tests: one process on a free loopback port with a generated configuration that
//! scrapes the given targets every second, and its HTTP query API. It is killed when dropped.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::http;

/// Environment variable naming the binary, overriding `prometheus` on PATH.
pub const BIN_ENV: &str = "SHIPPY_PROMETHEUS_BIN";

/// Longest wait for `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The scrape job every target is in.
pub const JOB: &str = "shippy";

/// The binary; an error explaining how to install it when it is missing.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|path| path.is_file())
    });
    found.context(
        "Prometheus is not installed: install it with `bash scripts/install-prometheus.sh` \
         (Debian's prometheus package), or set SHIPPY_PROMETHEUS_BIN. Metrics tests never skip.",
    )
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// Its value.
    pub value: f64,
}

/// A Prometheus process and its data directory.
#[derive(Debug)]
pub struct Prometheus {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` of `/metrics` endpoints) every second
    /// in the job [`JOB`], and waits until it is ready.
    pub fn start(targets: &[String]) -> anyhow::Result<Self> {
        let binary = binary()?;
        let mut last = None;
        // A free port can be taken by another process before Prometheus binds it: try again.
        for _ in 0..3 {
            match Self::launch(&binary, targets) {
                Ok(prometheus) => return Ok(prometheus),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("Prometheus did not start")))
    }

    fn launch(binary: &PathBuf, targets: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shippy-prometheus-")
            .tempdir()
            .context("creating Prometheus's directory")?;
        let port = http::free_port()?;
        let config = dir.path().join("prometheus.yml");
        let targets = serde_json::to_string(targets)?;
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: {targets}\n"
            ),
        )?;
        let log = fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut prometheus = Self { dir, child, port };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!(
                    "Prometheus exited with {status} while starting. Log:\n{}",
                    prometheus.log()
                );
            }
            if matches!(
                http::get(&prometheus.address(), "/-/ready", Duration::from_secs(2)),
                Ok((200, _))
            ) {
                return Ok(prometheus);
            }
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus was not ready within {READY_TIMEOUT:?}. Log:\n{}",
                    prometheus.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT` of its HTTP API.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The samples of the instant query `expr` now; an error when Prometheus refuses it (a
    /// syntax error, an unknown function).
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let (status, body) = http::get(
            &self.address(),
            &format!("/api/v1/query?query={}", http::encode(expr)),
            Duration::from_secs(5),
        )?;
        let answer: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            bail!("Prometheus refused {expr:?} ({status}): {body}");
        }
        let result = &answer["data"]["result"];
        let samples = match answer["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|series| Sample {
                    labels: series["metric"].as_object().cloned().unwrap_or_default(),
                    value: value_of(&series["value"]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: serde_json::Map::new(),
                value: value_of(result),
            }],
            other => bail!("{expr:?} gave a {other:?}, not an instant vector or scalar"),
        };
        Ok(samples)
    }

    /// Waits until `done` holds for the samples of `expr` (scrapes come every second); returns
    /// them, or fails after `within` with the last answer.
    pub fn wait_for(
        &self,
        expr: &str,
        within: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> anyhow::Result<Vec<Sample>> {
        let deadline = Instant::now() + within;
        loop {
            let samples = self.query(expr)?;
            if done(&samples) {
                return Ok(samples);
            }
            if Instant::now() >= deadline {
                bail!("{expr:?} still gives {samples:#?} after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The number in a `[time, "value"]` pair.
fn value_of(pair: &serde_json::Value) -> f64 {
    pair.get(1)
        .and_then(serde_json::Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Prometheus log ---\n{}", self.log());
        }
    }
}
