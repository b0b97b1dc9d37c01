//! Real etcd servers (Debian's `etcd-server`) on loopback for tests: one node or a 3-node cluster,
//! each on free ports with a temporary data dir, restartable on the same ports and data, killed on drop.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The etcd binary: `$SHIPPY_ETCD_BIN`, else `etcd` on PATH.
pub fn etcd_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SHIPPY_ETCD_BIN") {
        return Ok(PathBuf::from(path));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "etcd is not installed: run `scripts/install-etcd.sh` (Debian package etcd-server), or set SHIPPY_ETCD_BIN"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One etcd member.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str, log_dir: &std::path::Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", self.name)))?;
        let child = Command::new(etcd_binary()?)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &self.client_url(),
                "--advertise-client-urls",
                &self.client_url(),
            ])
            .args([
                "--listen-peer-urls",
                &self.peer_url(),
                "--initial-advertise-peer-urls",
                &self.peer_url(),
            ])
            .args([
                "--initial-cluster",
                initial_cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", "shippy-test"])
            // Fast elections on loopback keep restarts short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&mut self, signal: Signal) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            let _ = child.wait();
        }
    }
}

/// A running etcd cluster (one or three members).
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Etcd {
    /// A single-member cluster.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_cluster(1).await
    }

    /// A cluster of `size` members on loopback.
    pub async fn start_cluster(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("shippy-etcd-").tempdir()?;
        let mut members = Vec::new();
        for i in 0..size {
            members.push(Member {
                name: format!("etcd{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.path().join(format!("etcd{i}.data")),
                child: None,
            });
        }
        let mut etcd = Self { dir, members };
        for i in 0..size {
            etcd.spawn_member(i)?;
        }
        etcd.wait_healthy().await?;
        Ok(etcd)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_member(&mut self, i: usize) -> anyhow::Result<()> {
        let cluster = self.initial_cluster();
        let logs = self.dir.path().to_owned();
        self.members[i].spawn(&cluster, &logs)
    }

    /// Client URLs, comma-separated (the form `SHIPPY_ETCD__ENDPOINTS` takes).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URLs as a list.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Waits until a write goes through (a leader exists and a quorum answers).
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect();
        loop {
            let attempt = async {
                let mut client = etcd_client::Client::connect(&live, None).await?;
                client.put("/shippy-test/health", "ok", None).await?;
                Ok::<_, etcd_client::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) if tokio::time::Instant::now() >= deadline => {
                    bail!("etcd not healthy: {error}\n{}", self.log())
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    bail!("etcd not healthy (timeout)\n{}", self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops member `i` with SIGKILL (a crash or a lost machine).
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].signal(Signal::SIGKILL);
    }

    /// Stops every member (SIGTERM).
    pub fn stop(&mut self) {
        for member in &mut self.members {
            member.signal(Signal::SIGTERM);
        }
    }

    /// Stops every member and starts them again on the same ports and data; waits until healthy.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again().await
    }

    /// Starts the members that are stopped, on their ports and with whatever data they have
    /// (after [`Etcd::stop`]: an outage that ends); waits until healthy.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn_member(i)?;
            }
        }
        self.wait_healthy().await
    }

    /// Deletes the data of every stopped member, so that [`Etcd::start_again`] starts an empty
    /// cluster on the same ports (a lost disk, or a cluster rebuilt from nothing): every key
    /// and lease is gone.
    pub fn wipe_data(&mut self) -> anyhow::Result<()> {
        for member in &self.members {
            anyhow::ensure!(member.child.is_none(), "{} is still running", member.name);
            if member.data_dir.exists() {
                std::fs::remove_dir_all(&member.data_dir)
                    .with_context(|| format!("wiping {}", member.data_dir.display()))?;
            }
        }
        Ok(())
    }

    /// A client for assertions, connected to the members that are running.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect();
        Ok(etcd_client::Client::connect(live, None).await?)
    }

    /// The members' logs, for failure messages.
    pub fn log(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.signal(Signal::SIGKILL);
        }
    }
}
