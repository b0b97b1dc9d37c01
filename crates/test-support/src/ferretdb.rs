//! A real MongoDB-wire-compatible server for store tests: FerretDB 1.24 with its SQLite backend,
//! embedded in the small Go program `crates/test-support/ferretdb` (built by
//! `scripts/build-ferretdb.sh`, never by the tests).
//!
//! Each [`FerretDb`] owns one server process on a free loopback port and a temporary data
//! directory. It can be stopped, killed and restarted on the same port and directory (the data
//! persists), and is killed when dropped. The server also exits by itself when the test process
//! dies, because it watches the stdin pipe this process holds.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Environment variable naming the server binary, overriding [`DEFAULT_BIN`].
pub const BIN_ENV: &str = "SHIPPY_FERRETDB_BIN";

/// Where `scripts/build-ferretdb.sh` puts the binary by default.
pub const DEFAULT_BIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/tools/ferretdb-test-server"
);

/// Longest wait for the `LISTENING` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for a clean exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Server-selection and connect timeout of [`FerretDb::store_env`]: how long a store call waits
/// for a stopped server before it reports the store unavailable.
pub const TEST_SELECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// A database name no other test (or test process) uses: `<prefix>_<pid>_<n>`.
pub fn unique_database(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The server binary; an error explaining how to build it when it is missing.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(BIN_ENV).map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
    if !path.is_file() {
        bail!(
            "the FerretDB test server is not built: {} does not exist. Build it with \
             `bash scripts/build-ferretdb.sh` (needs Go >= 1.22 and the Go module proxy), or set \
             {BIN_ENV} to an existing binary. MongoDB store tests never skip.",
            path.display()
        );
    }
    Ok(path)
}

/// A FerretDB server process and its data directory.
#[derive(Debug)]
pub struct FerretDb {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The running process and the pipe it watches; `None` while stopped.
    process: Option<(Child, ChildStdin)>,
}

impl FerretDb {
    /// Starts a server on a free loopback port with a fresh data directory and waits until it
    /// answers. Fails (never skips) when the binary is missing.
    pub fn start() -> anyhow::Result<Self> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("shippy-ferretdb-")
            .tempdir()
            .context("creating the FerretDB data directory")?;
        let mut server = Self {
            binary,
            dir,
            port: 0,
            process: None,
        };
        // Port 0: the server binds a free port itself and reports it, so there is no race with
        // other processes picking ports.
        server.launch("127.0.0.1:0")?;
        Ok(server)
    }

    /// `mongodb://127.0.0.1:PORT/`, also while stopped (the port stays reserved for restarts).
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the SQLite files.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the server wrote to stderr so far (errors only, by default).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]). A no-op when stopped.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some((mut child, stdin)) = self.process.take() else {
            return Ok(());
        };
        signal(&child, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                signal(&child, Signal::SIGKILL);
                let _ = child.wait();
                bail!(
                    "FerretDB did not exit within {STOP_TIMEOUT:?} after SIGTERM; killed it. Log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        drop(stdin);
        if !status.success() {
            bail!(
                "FerretDB exited with {status} on SIGTERM. Log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// SIGKILL, as a crash would. A no-op when stopped.
    pub fn kill(&mut self) {
        if let Some((mut child, _stdin)) = self.process.take() {
            signal(&child, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory (stopping it first if it runs), so
    /// everything acknowledged before persists.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch(&format!("127.0.0.1:{}", self.port))
    }

    /// `SHIPPY_*` settings that point a service's store at this server's `database`, with the short
    /// timeouts tests want ([`TEST_SELECTION_TIMEOUT`]).
    pub fn store_env(&self, database: &str) -> Vec<(String, String)> {
        let timeout = TEST_SELECTION_TIMEOUT.as_millis().to_string();
        [
            ("SHIPPY_STORE__BACKEND", "mongodb".to_owned()),
            ("SHIPPY_STORE__MONGODB__URI", self.uri()),
            ("SHIPPY_STORE__MONGODB__DATABASE", database.to_owned()),
            (
                "SHIPPY_STORE__MONGODB__SERVER_SELECTION_TIMEOUT_MS",
                timeout.clone(),
            ),
            ("SHIPPY_STORE__MONGODB__CONNECT_TIMEOUT_MS", timeout),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Settings of type `T` on a fresh database of this server (named after `prefix`), with a local
    /// registry in a directory that lives as long as the returned guard.
    pub fn fresh_settings<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
        &self,
        prefix: &str,
    ) -> (T, tempfile::TempDir) {
        let registry = tempfile::tempdir().expect("temp dir");
        let settings = self.service_settings(&unique_database(prefix), registry.path());
        (settings, registry)
    }

    /// A fresh database of this server (named after `prefix`), connected as a service would.
    pub async fn fresh_database(&self, prefix: &str) -> mongodb::Database {
        let (settings, _registry): (shippy_shared::config::CommonSettings, _) =
            self.fresh_settings(prefix);
        shippy_shared::store::mongo::connect(&settings.store.mongodb)
            .await
            .expect("connect to FerretDB")
    }

    /// Settings of type `T` for a service run in-process: its store on `database` of this server,
    /// its local registry in `registry_dir`, no shutdown drain, dev-mode auth.
    pub fn service_settings<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
        &self,
        database: &str,
        registry_dir: &Path,
    ) -> T {
        let mut env = self.store_env(database);
        env.extend([
            (
                "SHIPPY_REGISTRY__LOCAL__DIR".to_owned(),
                registry_dir.display().to_string(),
            ),
            ("SHIPPY_SHUTDOWN__DRAIN_MS".to_owned(), "0".to_owned()),
            ("SHIPPY_AUTH__DEV_MODE".to_owned(), "true".to_owned()),
        ]);
        shippy_shared::config::layered_with_env(None, None, Some(env.into_iter().collect()))
            .expect("test settings")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ferretdb.log")
    }

    fn launch(&mut self, listen: &str) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the FerretDB log file")?;
        let mut child = Command::new(&self.binary)
            .arg("--listen-addr")
            .arg(listen)
            .arg("--sqlite-dir")
            .arg(self.data_dir())
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdin = child.stdin.take().context("FerretDB stdin")?;
        let stdout = child.stdout.take().context("FerretDB stdout")?;
        // Read on a thread so the wait is bounded even if the server hangs without a word.
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = lines.send(line);
        });
        let line = match ready.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "FerretDB did not report LISTENING within {READY_TIMEOUT:?}. Log:\n{}",
                    self.log()
                );
            }
        };
        match parse_ready_line(&line) {
            Some(port) if self.port == 0 || port == self.port => {
                self.port = port;
                self.process = Some((child, stdin));
                Ok(())
            }
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "FerretDB failed to start on {listen} (ready line {line:?}, port {other:?}, exit {}). \
                     Log:\n{}",
                    status.map_or_else(|| "unknown".to_owned(), |s: ExitStatus| s.to_string()),
                    self.log()
                );
            }
        }
    }
}

/// The port of a `LISTENING 127.0.0.1:PORT` line.
fn parse_ready_line(line: &str) -> Option<u16> {
    let address = line.trim().strip_prefix("LISTENING ")?;
    address.rsplit_once(':')?.1.parse().ok()
}

fn signal(child: &Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            if !log.trim().is_empty() {
                eprintln!(
                    "--- FerretDB log ({}) ---\n{log}",
                    self.log_path().display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_the_port() {
        assert_eq!(parse_ready_line("LISTENING 127.0.0.1:40523\n"), Some(40523));
        assert_eq!(parse_ready_line("listening"), None);
        assert_eq!(parse_ready_line(""), None);
    }
}
