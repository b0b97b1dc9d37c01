//! The zero-dependency registry: one JSON file per instance in a directory shared by the processes
//! of a host (`<dir>/<service>/<instance-id>.json`).
//!
//! Why files: they work across processes with no network, multicast or daemon, survive any process
//! dying, and are easy to inspect (`ls`, `cat`). Each file is written to a temporary name and renamed,
//! so readers never see half an entry. The owner rewrites it every TTL/3 (which also restores it if
//! someone deleted it); readers ignore entries older than the TTL, and entries whose process is gone
//! from this host (no process has its pid, or the one that has started at another time than the
//! writer), so a killed instance disappears at once on this host and within the TTL anywhere.
//!
//! Whoever can write the directory can route this user's calls (passwords, tokens) to any port, so
//! the directory is trusted only when it is ours alone: every directory of the registry (the base
//! `shippy-<uid>` or `$XDG_RUNTIME_DIR/shippy` of the default layout, the registry itself, one per
//! service) is created 0700, and one that is a symbolic link, not owned by this user, or writable by
//! group or others makes registering and subscribing fail with a sentence saying what to do. Entries
//! are opened without following links and without blocking (a FIFO or `/dev/zero` planted there is
//! skipped with a warning), only regular files of this user up to [`MAX_ENTRY_BYTES`] are read, and
//! they are written 0600. File-system work runs on threads of its own with a bound, so a stuck file
//! system can delay discovery but never a process's shutdown.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs,
    io::{self, Read as _, Write as _},
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, InstanceSet, Registration, Registry, ServiceInstance, validate_name};
use crate::config::RegistrySettings;

/// Largest registry entry read; an entry is a few hundred bytes of JSON, so anything bigger is not
/// one of ours (and must not be read into memory whole).
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// Longest wait for one piece of registry file-system work (writing an entry, one scan) before
/// registering or subscribing gives up; a healthy local file system answers in microseconds.
const IO_BOUND: Duration = Duration::from_secs(10);

/// The directory used when `registry.local.dir` is not set: `$XDG_RUNTIME_DIR/shippy/registry`, or
/// `<tmp>/shippy-<uid>/registry`.
pub fn default_dir() -> PathBuf {
    default_dir_in(
        std::env::var_os("XDG_RUNTIME_DIR"),
        &std::env::temp_dir(),
        nix::unistd::geteuid().as_raw(),
    )
}

/// [`default_dir`] for a given `XDG_RUNTIME_DIR`, temporary directory and user id.
fn default_dir_in(runtime: Option<OsString>, tmp: &Path, uid: u32) -> PathBuf {
    match runtime {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("shippy/registry"),
        _ => tmp.join(format!("shippy-{uid}")).join("registry"),
    }
}

/// An error naming `path`, what is wrong with it and what to do; one sentence once printed as
/// "local registry at <path>: <problem>".
fn refused(path: &Path, problem: String) -> DiscoveryError {
    DiscoveryError::Untrusted {
        path: path.to_owned(),
        problem,
    }
}

/// Why the file-system object described by `meta` (found at `path` without following links)
/// cannot be trusted as part of this user's registry, if it cannot. `kind` is "directory" or "entry".
fn untrusted(meta: &fs::Metadata, kind: &str) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Some(format!(
            "the {kind} is a symbolic link, which is never followed here"
        ))
    } else if meta.uid() != me {
        Some(format!(
            "the {kind} is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "the {kind} is writable by other users (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// Creates `dir` (and missing parents) 0700 if it is missing, then checks that it is a real
/// directory of this user that nobody else can write.
fn ensure_dir(dir: &Path) -> Result<(), DiscoveryError> {
    let io_err = |source| DiscoveryError::Io {
        path: dir.to_owned(),
        cause: source,
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            fs::symlink_metadata(dir).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    check_dir(dir, &meta)
}

/// Refuses a registry directory that another user could have planted or can write.
fn check_dir(dir: &Path, meta: &fs::Metadata) -> Result<(), DiscoveryError> {
    const FIX: &str = "anyone who can write it could register fake instances and receive this \
        user's calls; remove it (shippy recreates it with mode 0700) or set registry.local.dir \
        (SHIPPY_REGISTRY__LOCAL__DIR) to a directory only you can write";
    if let Some(problem) = untrusted(meta, "directory") {
        return Err(refused(dir, format!("refusing it: {problem}; {FIX}")));
    }
    if !meta.is_dir() {
        return Err(refused(
            dir,
            format!("refusing it: it is not a directory; {FIX}"),
        ));
    }
    Ok(())
}

/// Runs blocking file-system work on a thread of its own and waits for it at most [`IO_BOUND`].
///
/// Not tokio's blocking pool: a runtime being dropped waits for every blocking task, so one read
/// stuck on a hung file system would keep a stopped service from ever exiting. A plain thread is
/// not waited for; at worst it is left behind.
async fn off_runtime<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, DiscoveryError> + Send + 'static,
) -> Result<T, DiscoveryError> {
    let io_err = |source| DiscoveryError::Io {
        path: path.to_owned(),
        cause: source,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shippy-registry-io".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(io_err)?;
    match tokio::time::timeout(IO_BOUND, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(io_err(io::Error::other("registry I/O thread failed"))),
        Err(_) => Err(io_err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the file system did not answer within {IO_BOUND:?}"),
        ))),
    }
}

/// What one file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    instance: ServiceInstance,
    /// Process that owns the entry, on host `host`.
    pid: u32,
    host: String,
    /// The owner's `registry.ttl_secs`, in ms: how old the file may get before it is stale. The
    /// owner refreshes it at a third of that; a reader with a shorter TTL of its own must not take
    /// it for stale (and delete it) between two refreshes. Absent in entries of older versions,
    /// which are judged by the reader's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    /// When process `pid` started (`/proc/<pid>/stat`, clock ticks since boot): a pid is reused
    /// once its process is gone, and an entry whose pid now names another process is dead. Absent
    /// where `/proc` cannot tell, and in entries of older versions, which are judged by pid alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<u64>,
}

/// File-based registry for the processes of one host.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    ttl: Duration,
    poll: Duration,
}

impl LocalRegistry {
    /// A registry in `dir`, created 0700 if missing; refused when `dir` is a symbolic link, not
    /// owned by this user, or writable by group or others.
    pub fn new(dir: PathBuf, ttl: Duration, poll: Duration) -> Result<Self, DiscoveryError> {
        ensure_dir(&dir)?;
        Ok(Self { dir, ttl, poll })
    }

    /// A registry configured by `registry.*`. In the default layout the base directory
    /// (`<tmp>/shippy-<uid>` or `$XDG_RUNTIME_DIR/shippy`) is checked as well: its name is
    /// predictable, so another user may have made it first.
    pub fn from_settings(settings: &RegistrySettings) -> Result<Self, DiscoveryError> {
        let (dir, default) = match &settings.local.dir {
            Some(dir) => (dir.clone(), false),
            None => (default_dir(), true),
        };
        Self::open(
            dir,
            default,
            settings.ttl(),
            Duration::from_millis(settings.local.poll_ms.max(10)),
        )
    }

    /// [`LocalRegistry::new`], checking (and making) `dir`'s parent first when `with_base`.
    fn open(
        dir: PathBuf,
        with_base: bool,
        ttl: Duration,
        poll: Duration,
    ) -> Result<Self, DiscoveryError> {
        if with_base && let Some(base) = dir.parent() {
            ensure_dir(base)?;
        }
        Self::new(dir, ttl, poll)
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

/// Writes `entry` atomically as `<dir>/<id>.json`, mode 0600, creating `dir` 0700 if needed.
fn write_entry(dir: &Path, entry: &Entry) -> Result<(), DiscoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DiscoveryError::Io {
            path,
            cause: source,
        }
    };
    ensure_dir(dir)?;
    let file = entry_path(dir, &entry.instance.id);
    // Dot-prefixed temporary names are skipped by readers. A leftover from a crash is removed
    // first (unlinking never follows a link); `create_new` then refuses anything planted since.
    let tmp = dir.join(format!(".{}.tmp", entry.instance.id));
    let bytes = serde_json::to_vec_pretty(entry)?;
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // The creation mode is reduced by the umask; 0600 is already the most it may be.
    out.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(&tmp))?;
    out.write_all(&bytes).map_err(io_err(&tmp))?;
    drop(out);
    fs::rename(&tmp, &file).map_err(io_err(&file))
}

fn entry_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Whether the process that wrote `entry` (on this host) still runs: its pid exists and, when the
/// entry says when its process started, the process with that pid started then.
fn owner_alive(entry: &Entry) -> bool {
    process_alive(entry.pid)
        && match (entry.started, process_start(entry.pid)) {
            (Some(written), Some(now)) => written == now,
            // Nothing to compare: the pid alone decides.
            _ => true,
        }
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`); `None`
/// where there is no such file or it cannot be read.
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself:
    // the fields after it start past its last `)`, at field 3.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_ascii_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
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

/// Reads one entry: opened without following a link and without blocking (a FIFO opens at once),
/// then only a regular file of this user that nobody else can write, at most [`MAX_ENTRY_BYTES`].
/// `Ok(None)` when it vanished meanwhile (deregistered); `Err` says why it is not a usable entry.
fn read_entry(path: &Path) -> Result<Option<(Entry, SystemTime)>, String> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err("it is a symbolic link, which is never followed here".to_owned());
        }
        Err(e) => return Err(format!("it cannot be opened ({e})")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("it cannot be examined ({e})"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    if let Some(problem) = untrusted(&meta, "entry") {
        return Err(problem);
    }
    let too_big = || format!("it is larger than {} KiB", MAX_ENTRY_BYTES / 1024);
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows after the size check.
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(too_big());
    }
    let entry = serde_json::from_slice::<Entry>(&bytes)
        .map_err(|e| format!("it is not a registry entry ({e})"))?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Some((entry, modified)))
}

/// Reads the live entries of one service's directory, removing stale ones, and remembers which bad
/// entries it has warned about, so each is reported once rather than at every poll.
#[derive(Debug)]
struct Scanner {
    dir: PathBuf,
    ttl: Duration,
    host: String,
    /// File names already warned about; the empty name stands for the directory itself.
    warned: HashSet<OsString>,
}

impl Scanner {
    fn new(dir: PathBuf, ttl: Duration, host: String) -> Self {
        Self {
            dir,
            ttl,
            host,
            warned: HashSet::new(),
        }
    }

    fn scan(&mut self) -> InstanceSet {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            // Not made yet: nobody has registered.
            Err(_) => return Vec::new(),
        };
        if let Err(error) = check_dir(&self.dir, &meta) {
            if self.warned.insert(OsString::new()) {
                tracing::warn!("ignoring every registration: {error}");
            }
            return Vec::new();
        }
        self.warned.remove(&OsString::new());
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let now = SystemTime::now();
        let mut live = Vec::new();
        let mut bad = HashSet::new();
        for item in read.flatten() {
            let name = item.file_name();
            let text = name.to_string_lossy();
            if text.starts_with('.') || !text.ends_with(".json") {
                continue;
            }
            let path = item.path();
            match read_entry(&path) {
                Ok(Some((entry, modified))) => {
                    let ttl = entry.ttl_ms.map_or(self.ttl, Duration::from_millis);
                    let fresh = now.duration_since(modified).unwrap_or_default() <= ttl;
                    if fresh && (entry.host != self.host || owner_alive(&entry)) {
                        live.push(entry.instance);
                    } else {
                        tracing::debug!(id = %entry.instance.id, "removing expired registration");
                        let _ = fs::remove_file(&path);
                    }
                }
                Ok(None) => {}
                // Left alone (it may be someone's evidence), skipped, reported once.
                Err(problem) => {
                    if !self.warned.contains(&name) {
                        tracing::warn!(
                            "skipping registry entry {}: {problem}; remove it",
                            path.display()
                        );
                    }
                    bad.insert(name);
                }
            }
        }
        // Forget entries that are gone, so one that comes back is reported again.
        self.warned = bad;
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    #[tracing::instrument(
        name = "registry.register",
        skip_all,
        fields(otel.name = "registry register", registry = "local", service = %instance.name)
    )]
    async fn register(&self, instance: ServiceInstance) -> Result<Registration, DiscoveryError> {
        validate_name(&instance.name)?;
        let dir = self.service_dir(&instance.name);
        let entry = Entry {
            instance: instance.clone(),
            pid: std::process::id(),
            host: this_host(),
            ttl_ms: Some(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)),
            started: process_start(std::process::id()),
        };
        {
            let (root, dir, entry) = (self.dir.clone(), dir.clone(), entry.clone());
            off_runtime(&self.dir, move || {
                ensure_dir(&root)?;
                write_entry(&dir, &entry)
            })
            .await?;
        }
        tracing::info!(service = %instance.name, id = %instance.id, address = %instance.address, dir = %self.dir.display(), "registered (local)");
        super::heartbeat_confirmed(&instance.name);

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
                        _ = tick.tick() => {}
                    }
                    // Rewriting refreshes the mtime and restores a deleted entry.
                    let (d, e) = (dir.clone(), entry.clone());
                    let write = off_runtime(&dir, move || write_entry(&d, &e));
                    tokio::select! {
                        () = stop.cancelled() => break,
                        result = write => match result {
                            Ok(()) => super::heartbeat_confirmed(&entry.instance.name),
                            Err(error) => tracing::warn!("could not refresh local registration: {error}"),
                        }
                    }
                }
                let path = entry_path(&dir, &entry.instance.id);
                let remove = {
                    let path = path.clone();
                    move || match fs::remove_file(&path) {
                        Ok(()) => Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                        Err(source) => Err(DiscoveryError::Io {
                            path,
                            cause: source,
                        }),
                    }
                };
                match off_runtime(&path, remove).await {
                    Ok(true) => tracing::info!(id = %entry.instance.id, "deregistered (local)"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!("could not remove local registration: {error}");
                    }
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
        let (scanner, initial) = {
            let root = self.dir.clone();
            let mut scanner = Scanner::new(dir.clone(), ttl, host.clone());
            off_runtime(&dir, move || {
                ensure_dir(&root)?;
                ensure_dir(&scanner.dir)?;
                let set = scanner.scan();
                Ok((scanner, set))
            })
            .await?
        };
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(async move {
            let mut scanner = scanner;
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    () = tokio::time::sleep(poll) => {}
                }
                let scan = off_runtime(&dir, move || {
                    let set = scanner.scan();
                    Ok((scanner, set))
                });
                let now = tokio::select! {
                    () = tx.closed() => break,
                    result = scan => match result {
                        Ok((back, now)) => {
                            scanner = back;
                            now
                        }
                        Err(error) => {
                            // The stuck scan keeps its scanner; start afresh next time.
                            tracing::warn!("registry scan failed: {error}");
                            scanner = Scanner::new(dir.clone(), ttl, host.clone());
                            continue;
                        }
                    },
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

    fn propagation_delay(&self) -> Duration {
        // A registration made just after a scan began is seen by the next one, a poll later; the
        // second poll covers the scan itself on a loaded machine.
        self.poll * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path, ttl: Duration) -> LocalRegistry {
        LocalRegistry::new(dir.to_owned(), ttl, Duration::from_millis(20)).expect("registry")
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
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
            ttl_ms: None,
            started: None,
        };
        // A pid far above pid_max does not exist.
        let dead = Entry {
            instance: ServiceInstance::new("user", "1", "127.0.0.1:2".into()),
            pid: 999_999_999,
            host: host.clone(),
            ttl_ms: None,
            started: None,
        };
        let remote = Entry {
            instance: ServiceInstance::new("user", "1", "10.0.0.1:3".into()),
            pid: 999_999_999,
            host: "another-host".into(),
            ttl_ms: None,
            started: None,
        };
        // This process's pid, but written by a process that started at another time: the pid
        // was reused, and the entry's owner is gone.
        let reused = Entry {
            instance: ServiceInstance::new("user", "3", "127.0.0.1:5".into()),
            started: process_start(std::process::id()).map(|started| started + 1),
            ..alive.clone()
        };
        let ours = Entry {
            instance: ServiceInstance::new("user", "4", "127.0.0.1:6".into()),
            started: process_start(std::process::id()),
            ..alive.clone()
        };
        assert!(
            ours.started.is_some(),
            "/proc tells when this process started"
        );
        for e in [&alive, &dead, &remote, &reused, &ours] {
            write_entry(tmp.path(), e).expect("write");
        }
        let live =
            Scanner::new(tmp.path().to_owned(), Duration::from_secs(10), host.clone()).scan();
        let mut addrs: Vec<_> = live.iter().map(|i| i.address.as_str()).collect();
        addrs.sort_unstable();
        assert_eq!(addrs, ["10.0.0.1:3", "127.0.0.1:1", "127.0.0.1:6"]);
        for gone in [&dead, &reused] {
            assert!(
                !entry_path(tmp.path(), &gone.instance.id).exists(),
                "dead entry {} removed",
                gone.instance.address
            );
        }
        fs::remove_file(entry_path(tmp.path(), &ours.instance.id)).expect("remove");

        // An entry's own TTL is the one that counts: a reader with a shorter one leaves it be.
        let own_ttl = Entry {
            instance: ServiceInstance::new("user", "2", "127.0.0.1:4".into()),
            ttl_ms: Some(60_000),
            ..alive.clone()
        };
        write_entry(tmp.path(), &own_ttl).expect("write");
        let live = Scanner::new(tmp.path().to_owned(), Duration::ZERO, host).scan();
        assert_eq!(
            live.iter().map(|i| i.address.as_str()).collect::<Vec<_>>(),
            ["127.0.0.1:4"],
            "with a zero TTL of the reader's, every entry without one of its own is stale"
        );
        assert!(entry_path(tmp.path(), &own_ttl.instance.id).exists());
        assert!(!entry_path(tmp.path(), &alive.instance.id).exists());
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

    #[test]
    fn default_layout_is_under_the_runtime_dir_or_a_per_user_tmp_dir() {
        let tmp = Path::new("/tmp");
        assert_eq!(
            default_dir_in(Some("/run/user/7".into()), tmp, 7),
            Path::new("/run/user/7/shippy/registry")
        );
        for runtime in [None, Some(OsString::new())] {
            assert_eq!(
                default_dir_in(runtime, tmp, 7),
                Path::new("/tmp/shippy-7/registry")
            );
        }
    }

    #[tokio::test]
    async fn directories_are_created_0700_and_entries_0600() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().join("shippy-test");
        let dir = base.join("registry");
        let reg = registry(&dir, Duration::from_secs(10));
        assert_eq!(mode(&base), 0o700, "base directory");
        assert_eq!(mode(&dir), 0o700, "registry directory");
        let handle = reg
            .register(ServiceInstance::new("vessel", "1", "127.0.0.1:7".into()))
            .await
            .expect("register");
        assert_eq!(mode(&dir.join("vessel")), 0o700, "service directory");
        let entry = entry_path(&dir.join("vessel"), &handle.instance().id);
        assert_eq!(mode(&entry), 0o600, "entry");
        handle.deregister().await;
    }

    /// The sentence of a refusal, as a person reads it.
    fn refusal(result: Result<LocalRegistry, DiscoveryError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn directories_others_could_control_are_refused_with_a_sentence() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (ttl, poll) = (Duration::from_secs(10), Duration::from_millis(20));

        let open = tmp.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let message = refusal(LocalRegistry::new(open.clone(), ttl, poll));
        assert!(
            message.contains(&open.display().to_string())
                && message.contains("writable by other users (mode 0777)")
                && message.contains("registry.local.dir"),
            "{message}"
        );

        let real = tmp.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let message = refusal(LocalRegistry::new(link.clone(), ttl, poll));
        assert!(message.contains("symbolic link"), "{message}");

        // A symlinked base directory, as the default layout `<tmp>/shippy-<uid>/registry` has.
        let message = refusal(LocalRegistry::open(link.join("registry"), true, ttl, poll));
        assert!(
            message.contains(&link.display().to_string()) && message.contains("symbolic link"),
            "{message}"
        );
        assert!(!real.join("registry").exists(), "nothing made through it");

        if is_root() {
            let foreign = tmp.path().join("foreign");
            fs::create_dir(&foreign).expect("mkdir");
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
            let message = refusal(LocalRegistry::new(foreign, ttl, poll));
            assert!(message.contains("owned by uid 65534"), "{message}");
        }
    }

    #[tokio::test]
    async fn a_service_directory_others_can_write_fails_register_and_subscribe() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = registry(tmp.path(), Duration::from_secs(10));
        let vessel = tmp.path().join("vessel");
        fs::create_dir(&vessel).expect("mkdir");
        fs::set_permissions(&vessel, fs::Permissions::from_mode(0o777)).expect("chmod");
        let message = reg
            .subscribe("vessel")
            .await
            .expect_err("subscribe refused")
            .to_string();
        assert!(message.contains("writable by other users"), "{message}");
        let message = reg
            .register(ServiceInstance::new("vessel", "1", "127.0.0.1:7".into()))
            .await
            .expect_err("register refused")
            .to_string();
        assert!(message.contains("writable by other users"), "{message}");
    }

    #[test]
    fn entries_that_are_not_small_regular_files_of_ours_are_skipped_without_blocking() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vessel");
        let host = this_host();
        let good = Entry {
            instance: ServiceInstance::new("vessel", "1", "127.0.0.1:1".into()),
            pid: std::process::id(),
            host: host.clone(),
            ttl_ms: None,
            started: None,
        };
        write_entry(&dir, &good).expect("write");
        let mut bad = vec![
            "zero.json",
            "fifo.json",
            "big.json",
            "open.json",
            "junk.json",
        ];
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.json")).expect("symlink");
        nix::unistd::mkfifo(&dir.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let mut big = serde_json::to_vec(&good).expect("json");
        big.resize(usize::try_from(MAX_ENTRY_BYTES).expect("fits") + 1, b' ');
        fs::write(dir.join("big.json"), big).expect("write");
        let open = dir.join("open.json");
        fs::write(&open, serde_json::to_vec(&good).expect("json")).expect("write");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).expect("chmod");
        fs::write(dir.join("junk.json"), b"not json").expect("write");
        if is_root() {
            let foreign = dir.join("foreign.json");
            fs::write(&foreign, serde_json::to_vec(&good).expect("json")).expect("write");
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
            bad.push("foreign.json");
        }

        // On a thread with a deadline: the old scanner blocked forever on the FIFO.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut scanner = Scanner::new(dir, Duration::from_secs(10), host);
            let first = scanner.scan();
            let second = scanner.scan();
            let _ = tx.send((first, second, scanner.warned));
        });
        let (first, second, warned) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the scan finishes");
        assert_eq!(first, vec![good.instance.clone()]);
        assert_eq!(second, first, "stable across scans");
        let mut warned: Vec<_> = warned
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        warned.sort_unstable();
        bad.sort_unstable();
        assert_eq!(warned, bad, "each bad entry remembered (warned once)");
    }

    #[test]
    fn reasons_name_what_is_wrong() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let link = tmp.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert_eq!(
            read_entry(&link).expect_err("refused"),
            "it is a symbolic link, which is never followed here"
        );
        let fifo = tmp.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        assert_eq!(
            read_entry(&fifo).expect_err("refused"),
            "it is not a regular file"
        );
        assert!(matches!(
            read_entry(&tmp.path().join("gone.json")),
            Ok(None)
        ));
    }
}
