//! Test support: starts the real shippy binaries as separate processes on free ports, waits until
//! they are registered and SERVING, runs the real `shippy` CLI against them, and tears everything
//! down when dropped, also when a test fails.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `make test` does it).

pub mod browser;
pub mod chaos;
pub mod etcd;
pub mod ferretdb;
pub mod http;
pub mod jaeger;
pub mod oidc;
pub mod prometheus;
pub mod store_contract;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use shippy_shared::{
    config::EtcdSettings,
    discovery::{Registry, ServiceInstance, etcd::EtcdRegistry, local::LocalRegistry},
    probe,
    runtime::{Application, HostError},
    store::StoreError,
};
use tonic_health::pb::health_check_response::ServingStatus;

/// How long a process may take to become SERVING.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Directory holding the workspace's built binaries (`target/debug` for tests).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHIPPY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_owned()
}

/// Path of a workspace binary; panics with the fix when it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (`make test` does)",
        path.display()
    );
    path
}

/// A running service process.
#[derive(Debug)]
pub struct ServiceProcess {
    /// `consignment`, `vessel` or `user`.
    pub service: String,
    /// Its registry entry (address, id).
    pub instance: ServiceInstance,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// The first of `processes` that runs `service` (panics when none does: a test's setup is wrong).
    pub fn of<'a>(processes: &'a [ServiceProcess], service: &str) -> &'a ServiceProcess {
        processes
            .iter()
            .find(|p| p.service == service)
            .unwrap_or_else(|| panic!("no {service} process among those started"))
    }

    /// The address it serves on.
    pub fn address(&self) -> &str {
        &self.instance.address
    }

    /// `http://host:port` of its HTTP listener (the gateway's), from its registry entry.
    pub fn http_url(&self) -> Option<String> {
        self.instance
            .metadata
            .get("http_address")
            .map(|address| format!("http://{address}"))
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory figure of `/proc/PID/status` in KiB (`field` such as `"VmRSS"` or `"VmHWM"`);
    /// `None` once the process is gone.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?;
        line.split_whitespace().next()?.parse().ok()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `within`).
    pub fn stop(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                self.signal(Signal::SIGKILL);
                bail!(
                    "{} did not exit within {within:?} after SIGTERM",
                    self.service
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself (as one refusing to start does), killing it after
    /// `within`.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                self.signal(Signal::SIGKILL);
                bail!("{} did not exit within {within:?}", self.service);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGSTOP: the process stays registered and its sockets stay open, but it answers nothing
    /// (a frozen or overloaded host, as clients see it).
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`ServiceProcess::freeze`].
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// The Prometheus text its admin port serves now (`metrics_address` in its registry entry).
    pub fn metrics(&self) -> anyhow::Result<String> {
        let admin = self
            .instance
            .metadata
            .get("metrics_address")
            .with_context(|| format!("{} registered no metrics_address", self.service))?;
        let (status, text) = self::http::get(admin, "/metrics", Duration::from_secs(5))?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(text)
    }

    /// The sum of the samples of metric `name` on its admin port whose labels include every
    /// `label="value"` of `labels` (0 when there is none).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        Ok(sum_samples(&self.metrics()?, name, labels))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last log lines of {} ({}) ---",
                self.service,
                self.log.display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A set of shippy processes sharing one temporary local registry and CLI home.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
    registry: Arc<dyn Registry>,
    started: usize,
    /// Where the service binaries come from, when not [`bin_dir`].
    binaries: Option<PathBuf>,
}

impl Cluster {
    /// An empty cluster on the local registry in a fresh temporary directory.
    pub fn local() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("shippy-test-").tempdir()?;
        let registry_dir = dir.path().join("registry");
        let mut env = BTreeMap::new();
        env.insert("SHIPPY_REGISTRY__BACKEND".into(), "local".into());
        env.insert(
            "SHIPPY_REGISTRY__LOCAL__DIR".into(),
            registry_dir.display().to_string(),
        );
        env.insert("SHIPPY_REGISTRY__LOCAL__POLL_MS".into(), "100".into());
        env.insert("SHIPPY_AUTH__DEV_MODE".into(), "true".into());
        env.insert(
            "SHIPPY_TOKEN_FILE".into(),
            dir.path().join("token").display().to_string(),
        );
        env.insert("SHIPPY_LOG__LEVEL".into(), "info".into());
        // The gateway's HTTP port: a free one, like every gRPC port here (its default is 8080).
        env.insert("SHIPPY_GATEWAY__HTTP__PORT".into(), "0".into());
        // The default store, SQLite, in this cluster's own file: shared by its processes like the
        // instances on one host, and by nothing else.
        env.insert(
            "SHIPPY_STORE__SQLITE__PATH".into(),
            dir.path().join("data/shippy.db").display().to_string(),
        );
        let registry = LocalRegistry::new(
            registry_dir,
            Duration::from_secs(10),
            Duration::from_millis(50),
        )?;
        Ok(Self {
            dir,
            env,
            registry: Arc::new(registry),
            started: 0,
            binaries: None,
        })
    }

    /// An empty cluster registering in `etcd` under a prefix of its own, with registration TTL
    /// `ttl_secs`.
    pub async fn on_etcd(etcd: &etcd::Etcd, ttl_secs: u64) -> anyhow::Result<Self> {
        let mut cluster = Self::local()?;
        let prefix = format!("shippy-test-{}", uuid_like());
        cluster.set_env("SHIPPY_REGISTRY__BACKEND", "etcd");
        cluster.set_env("SHIPPY_REGISTRY__TTL_SECS", &ttl_secs.to_string());
        cluster.set_env("SHIPPY_ETCD__ENDPOINTS", &etcd.endpoints());
        cluster.set_env("SHIPPY_ETCD__PREFIX", &prefix);
        let settings = EtcdSettings {
            endpoints: etcd.endpoint_list(),
            prefix,
            ..EtcdSettings::default()
        };
        let connection = shippy_shared::etcd::Etcd::connect(&settings).await?;
        cluster.registry = Arc::new(EtcdRegistry::new(connection, Duration::from_secs(ttl_secs)));
        Ok(cluster)
    }

    /// The etcd prefix of this cluster (`SHIPPY_ETCD__PREFIX`), if it runs on etcd.
    pub fn etcd_prefix(&self) -> Option<&str> {
        self.env.get("SHIPPY_ETCD__PREFIX").map(String::as_str)
    }

    /// Directory of the local registry (used when not on etcd).
    pub fn local_registry_dir(&self) -> PathBuf {
        self.dir.path().join("registry")
    }

    /// Sets an environment variable for every process started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    /// Stops setting an environment variable for processes started from now on.
    pub fn unset_env(&mut self, key: &str) {
        self.env.remove(key);
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry the processes use.
    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        // The developer's own SHIPPY_* settings must not leak into tests.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SHIPPY_") {
                command.env_remove(key);
            }
        }
        command
            .env_remove("RUST_LOG")
            .envs(&self.env)
            .stdin(Stdio::null());
        command
    }

    /// Starts `shippy-<service>` with extra env vars, and waits until it is registered and SERVING.
    pub async fn start_with(
        &mut self,
        service: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut process = self.spawn_with(service, extra)?;
        process.instance = self.wait_registered(&mut process).await?;
        probe::wait_serving(process.address(), "", START_TIMEOUT).await?;
        Ok(process)
    }

    /// Starts `shippy-<service>` with extra env vars without waiting for anything (for processes
    /// expected to refuse to start, or registering where [`Cluster::registry`] does not look).
    /// Its `instance` is a placeholder.
    pub fn spawn_with(
        &mut self,
        service: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        self.started += 1;
        let log = self
            .dir
            .path()
            .join(format!("{service}-{}.log", self.started));
        let file = fs::File::create(&log)?;
        let name = format!("shippy-{service}");
        let program = match &self.binaries {
            Some(dir) => dir.join(&name),
            None => binary(&name),
        };
        let child = self
            .command(&program)
            .envs(extra.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting shippy-{service}"))?;
        Ok(ServiceProcess {
            service: service.to_owned(),
            instance: ServiceInstance::new(service, "", String::new()),
            child,
            log,
        })
    }

    /// Starts service binaries from `dir` from now on (e.g. the static builds the images ship).
    pub fn use_binaries_from(&mut self, dir: PathBuf) {
        self.binaries = Some(dir);
    }

    /// Starts `shippy-<service>` and waits until it is SERVING.
    pub async fn start(&mut self, service: &str) -> anyhow::Result<ServiceProcess> {
        self.start_with(service, &[]).await
    }

    /// Starts one user, `vessels` vessel and one consignment service.
    pub async fn start_all(&mut self, vessels: usize) -> anyhow::Result<Vec<ServiceProcess>> {
        let mut processes = vec![self.start("user").await?];
        for _ in 0..vessels {
            processes.push(self.start("vessel").await?);
        }
        processes.push(self.start("consignment").await?);
        Ok(processes)
    }

    async fn wait_registered(
        &self,
        process: &mut ServiceProcess,
    ) -> anyhow::Result<ServiceInstance> {
        let pid = process.pid().to_string();
        let mut watch = self.registry.subscribe(&process.service).await?;
        let wait = watch.wait_for(|set| set.iter().any(|i| i.metadata.get("pid") == Some(&pid)));
        tokio::select! {
            found = wait => {
                let set = found.context("registry watch closed")?;
                Ok(set.iter().find(|i| i.metadata.get("pid") == Some(&pid)).cloned().context("instance vanished")?)
            }
            () = exited(process) => bail!("shippy-{} exited before registering:\n{}", process.service, process.log()),
            () = tokio::time::sleep(START_TIMEOUT) => bail!("shippy-{} did not register within {START_TIMEOUT:?}:\n{}", process.service, process.log()),
        }
    }

    /// Runs the real `shippy` CLI with this cluster's discovery and token file.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cli_with_stdin(args, None)
    }

    /// Like [`Cluster::cli`], feeding `stdin`.
    pub fn cli_with_stdin<I, S>(&self, args: I, stdin: Option<&str>) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(&binary("shippy"));
        command.args(args).current_dir(self.dir.path());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("shippy CLI starts");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("shippy CLI runs")
    }

    /// Like [`Cluster::cli`], with the given stdin and stdout (a file, `/dev/zero`, a pipe whose
    /// reader is gone); stderr is captured, and stdout too when `stdout` is [`Stdio::piped`].
    pub fn cli_io<I, S>(&self, args: I, stdin: Stdio, stdout: Stdio) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(&binary("shippy"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("shippy CLI starts")
            .wait_with_output()
            .expect("shippy CLI runs")
    }

    /// Runs the CLI with its stdout a pipe whose reading end is already closed, as in
    /// `shippy ... | head -1` once `head` is gone: every write to stdout fails with EPIPE.
    pub fn cli_with_closed_stdout<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        self.cli_io(args, Stdio::null(), Stdio::from(writer))
    }

    /// Runs the real `shippy` CLI like [`Cluster::cli`], but kills it and fails if it has not
    /// finished within `within` (for commands that must not hang).
    pub fn cli_within<I, S>(&self, args: I, within: Duration) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(&binary("shippy"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("shippy CLI starts")?;
        // Drain the pipes on threads, so a chatty CLI cannot block on a full pipe.
        let mut stdout = child.stdout.take().context("stdout pipe")?;
        let mut stderr = child.stderr.take().context("stderr pipe")?;
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
            buf
        });
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("shippy did not finish within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }

    /// Runs the CLI, asserting success; returns stdout.
    pub fn cli_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "shippy {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates a user and logs in through the CLI; returns the saved token.
    pub fn sign_up_and_login(&self, email: &str) -> String {
        self.cli_ok([
            "user",
            "create",
            "--name",
            "Test User",
            "--email",
            email,
            "--company",
            "Acme",
            "--password",
            "correct horse",
        ]);
        self.cli_ok(["login", "--email", email, "--password", "correct horse"]);
        fs::read_to_string(self.dir.path().join("token")).expect("token saved")
    }
}

/// Waits until the server at `address` reports `wanted` both for itself and for `grpc_service`.
pub async fn wait_health(
    address: &str,
    grpc_service: &str,
    wanted: ServingStatus,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = (
            probe::check(address, "", Duration::from_secs(1)).await.ok(),
            probe::check(address, grpc_service, Duration::from_secs(1))
                .await
                .ok(),
        );
        if now == (Some(wanted), Some(wanted)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {now:?} after {within:?}, expected {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A service [`Application`] running inside the test process, stopped through its shutdown future.
#[derive(Debug)]
pub struct InProcess {
    /// The address it serves on.
    pub address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), HostError>>,
}

impl InProcess {
    /// Serves `app` in a task until [`InProcess::begin_stop`].
    pub fn spawn(app: Application) -> Self {
        let address = app.local_addr().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    /// Completes its shutdown future, as a SIGTERM would.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).expect("service still running");
        }
    }

    /// Whether the service has finished shutting down.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it (if not begun yet) and waits for a clean shutdown.
    pub async fn finish(mut self) {
        self.begin_stop();
        self.task
            .await
            .expect("service task")
            .expect("clean shutdown");
    }
}

/// Retries a store write until it succeeds, within `within`; every failure on the way must be
/// [`StoreError::Unavailable`] (an outage), never another error and never a silent success.
pub async fn write_when_back<F, Fut>(within: Duration, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match write().await {
            Ok(()) => return,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("store did not recover: {error:?}"),
        }
    }
}

/// A short random id for prefixes and database names.
pub fn uuid_like() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Completes when the process exits.
async fn exited(process: &mut ServiceProcess) {
    loop {
        if !matches!(process.child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The example consignment shipped at the repository root.
pub fn example_consignment() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../consignment.json")
}

/// `message` as a request that carries `token` as its bearer token (`authorization` metadata).
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .expect("a token is ASCII"),
    );
    request
}

/// Builds a consignment JSON document.
pub fn consignment_json(weight: i64, containers: usize) -> String {
    let containers: Vec<_> = (0..containers)
        .map(|i| serde_json::json!({ "customer_id": format!("cust{i:03}"), "user_id": "", "origin": "Felixstowe" }))
        .collect();
    serde_json::json!({ "description": "test cargo", "weight": weight, "containers": containers })
        .to_string()
}

/// The sum of the samples of `name` in Prometheus `text` whose labels include every
/// `label="value"` of `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labelled, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(key, wanted)| labelled.contains(&format!("{key}=\"{wanted}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
