//! The zero-dependency registry: one JSON file per instance in a directory shared by the processes
//! of a host (`<dir>/<service>/<instance-id>.json`).
//!
//! Why files: they work across processes with no network, multicast or daemon, survive any process
//! dying, and are easy to inspect (`ls`, `cat`). Each file is written to a temporary name and renamed,
//! so readers never see half an entry. The owner rewrites it every TTL/3 (which also restores it if
//! someone deleted it); readers ignore entries older than the TTL, and entries whose process is gone
//! from this host, so a killed instance disappears at once on this host and within the TTL anywhere.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, InstanceSet, Registration, Registry, ServiceInstance, validate_name};
use crate::config::RegistrySettings;

/// The directory used when `registry.local.dir` is not set: `$XDG_RUNTIME_DIR/shippy/registry`, or
/// `<tmp>/shippy-<uid>/registry`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("shippy/registry"),
        _ => std::env::temp_dir()
            .join(format!("shippy-{}", nix::unistd::getuid()))
            .join("registry"),
    }
}

/// What one file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    instance: ServiceInstance,
    /// Process that owns the entry, on host `host`.
    pid: u32,
    host: String,
}

/// File-based registry for the processes of one host.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    ttl: Duration,
    poll: Duration,
}

impl LocalRegistry {
    /// A registry in `dir` (created if missing).
    pub fn new(dir: PathBuf, ttl: Duration, poll: Duration) -> Result<Self, DiscoveryError> {
        fs::create_dir_all(&dir).map_err(|source| DiscoveryError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir, ttl, poll })
    }

    /// A registry configured by `registry.*`.
    pub fn from_settings(settings: &RegistrySettings) -> Result<Self, DiscoveryError> {
        let dir = settings.local.dir.clone().unwrap_or_else(default_dir);
        Self::new(
            dir,
            settings.ttl(),
            Duration::from_millis(settings.local.poll_ms.max(10)),
        )
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn service_dir(&self, service: &str) -> PathBuf {
        self.dir.join(service)
    }
}

fn this_host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_entry(dir: &Path, entry: &Entry) -> Result<(), DiscoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DiscoveryError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let file = dir.join(format!("{}.json", entry.instance.id));
    // Dot-prefixed temporary names are skipped by readers.
    let tmp = dir.join(format!(".{}.tmp", entry.instance.id));
    fs::write(&tmp, serde_json::to_vec_pretty(entry)?).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &file).map_err(io_err(&file))
}

fn entry_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Whether process `pid` still exists (only meaningful on the same host).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // Exists but belongs to someone else.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Reads the live entries of one service, removing stale ones.
fn scan(dir: &Path, ttl: Duration, host: &str) -> InstanceSet {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut live = Vec::new();
    for item in read.flatten() {
        let path = item.path();
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let fresh = item
            .metadata()
            .and_then(|m| m.modified())
            .map(|modified| now.duration_since(modified).unwrap_or_default() <= ttl)
            .unwrap_or(false);
        let entry = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
        match entry {
            Some(entry) if fresh && (entry.host != host || process_alive(entry.pid)) => {
                live.push(entry.instance);
            }
            Some(entry) => {
                tracing::debug!(id = %entry.instance.id, "removing expired registration");
                let _ = fs::remove_file(&path);
            }
            // Unreadable or foreign files are left alone; they may be mid-rename on another host's clock.
            None => {}
        }
    }
    live.sort_by(|a, b| a.id.cmp(&b.id));
    live
}

#[async_trait]
impl Registry for LocalRegistry {
    async fn register(&self, instance: ServiceInstance) -> Result<Registration, DiscoveryError> {
        validate_name(&instance.name)?;
        let dir = self.service_dir(&instance.name);
        let entry = Entry {
            instance: instance.clone(),
            pid: std::process::id(),
            host: this_host(),
        };
        {
            let (dir, entry) = (dir.clone(), serde_json::to_vec(&entry)?);
            let entry: Entry = serde_json::from_slice(&entry)?;
            tokio::task::spawn_blocking(move || write_entry(&dir, &entry))
                .await
                .map_err(|e| DiscoveryError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(e),
                })??;
        }
        tracing::info!(service = %instance.name, id = %instance.id, address = %instance.address, dir = %self.dir.display(), "registered (local)");

        let stop = CancellationToken::new();
        let heartbeat = (self.ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(heartbeat);
                tick.tick().await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => {
                            // Rewriting refreshes the mtime and restores a deleted entry.
                            if let Err(error) = write_entry(&dir, &entry) {
                                tracing::warn!(%error, "could not refresh local registration");
                            }
                        }
                    }
                }
                match fs::remove_file(entry_path(&dir, &entry.instance.id)) {
                    Ok(()) => tracing::info!(id = %entry.instance.id, "deregistered (local)"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => tracing::warn!(%error, "could not remove local registration"),
                }
            }
        });
        Ok(Registration::new(instance, stop, task))
    }

    async fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<InstanceSet>, DiscoveryError> {
        validate_name(service)?;
        let dir = self.service_dir(service);
        let (ttl, poll, host) = (self.ttl, self.poll, this_host());
        let initial = {
            let (dir, host) = (dir.clone(), host.clone());
            tokio::task::spawn_blocking(move || scan(&dir, ttl, &host))
                .await
                .unwrap_or_default()
        };
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    () = tokio::time::sleep(poll) => {}
                }
                let (d, h) = (dir.clone(), host.clone());
                let Ok(now) = tokio::task::spawn_blocking(move || scan(&d, ttl, &h)).await else {
                    continue;
                };
                tx.send_if_modified(|current| {
                    if *current == now {
                        false
                    } else {
                        *current = now;
                        true
                    }
                });
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path, ttl: Duration) -> LocalRegistry {
        LocalRegistry::new(dir.to_owned(), ttl, Duration::from_millis(20)).expect("registry")
    }

    #[tokio::test]
    async fn registered_instance_is_resolved_and_gone_after_deregister() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = registry(tmp.path(), Duration::from_secs(10));
        let mut rx = reg.subscribe("vessel").await.expect("subscribe");
        assert!(rx.borrow().is_empty());

        let handle = reg
            .register(ServiceInstance::new(
                "vessel",
                "0.1.0",
                "127.0.0.1:5000".into(),
            ))
            .await
            .expect("register");
        let seen = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.len() == 1))
            .await
            .expect("appears within 1 s")
            .expect("watch open")
            .clone();
        assert_eq!(seen[0].address, "127.0.0.1:5000");

        handle.deregister().await;
        assert!(
            reg.subscribe("vessel")
                .await
                .expect("subscribe")
                .borrow()
                .is_empty(),
            "gone at once"
        );
    }

    #[test]
    fn stale_and_dead_entries_are_ignored_and_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = this_host();
        let alive = Entry {
            instance: ServiceInstance::new("user", "1", "127.0.0.1:1".into()),
            pid: std::process::id(),
            host: host.clone(),
        };
        // A pid far above pid_max does not exist.
        let dead = Entry {
            instance: ServiceInstance::new("user", "1", "127.0.0.1:2".into()),
            pid: 999_999_999,
            host: host.clone(),
        };
        let remote = Entry {
            instance: ServiceInstance::new("user", "1", "10.0.0.1:3".into()),
            pid: 999_999_999,
            host: "another-host".into(),
        };
        for e in [&alive, &dead, &remote] {
            write_entry(tmp.path(), e).expect("write");
        }
        let live = scan(tmp.path(), Duration::from_secs(10), &host);
        let mut addrs: Vec<_> = live.iter().map(|i| i.address.as_str()).collect();
        addrs.sort_unstable();
        assert_eq!(addrs, ["10.0.0.1:3", "127.0.0.1:1"]);
        assert!(
            !entry_path(tmp.path(), &dead.instance.id).exists(),
            "dead entry removed"
        );

        // With a zero TTL every entry is stale.
        assert!(scan(tmp.path(), Duration::ZERO, &host).is_empty());
    }

    #[tokio::test]
    async fn deleted_entry_is_restored_by_heartbeat() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = registry(tmp.path(), Duration::from_millis(300));
        let handle = reg
            .register(ServiceInstance::new("vessel", "1", "127.0.0.1:7".into()))
            .await
            .expect("register");
        let path = entry_path(&tmp.path().join("vessel"), &handle.instance().id);
        fs::remove_file(&path).expect("delete");
        let mut rx = reg.subscribe("vessel").await.expect("subscribe");
        tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| s.len() == 1))
            .await
            .expect("restored")
            .expect("watch open");
        handle.deregister().await;
    }
}
