//! The local registry cannot be taken over or broken by another local user: with the real binaries,
//! a registry directory that another user owns, that others can write, or that is reached through a
//! symbolic link makes the services refuse to start and `shippy status` refuse too, each with one
//! sentence naming the directory; the default directory is created 0700 and entries 0600; and
//! entries that are not regular files (a FIFO, a link to `/dev/zero`) neither hang `shippy status`
//! nor disturb the services or their shutdown.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use shippy_test_support::{Cluster, START_TIMEOUT};

/// Bound of every wait; generous for a loaded 2-core machine, never a speed target.
const WAIT: Duration = Duration::from_secs(20);

/// The uid the tests run as (the owner of the directories they make).
fn my_uid(cluster: &Cluster) -> u32 {
    fs::metadata(cluster.dir()).expect("cluster dir").uid()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Points the cluster's processes at the default layout under `tmp` (`<tmp>/shippy-<uid>/registry`):
/// no configured directory, no `XDG_RUNTIME_DIR`.
fn use_default_layout(cluster: &mut Cluster, tmp: &Path) {
    cluster.unset_env("SHIPPY_REGISTRY__LOCAL__DIR");
    cluster.set_env("TMPDIR", &tmp.display().to_string());
    // An empty XDG_RUNTIME_DIR counts as unset.
    cluster.set_env("XDG_RUNTIME_DIR", "");
}

/// Starts the user service expecting it to refuse; returns what it printed.
fn refused_start(cluster: &mut Cluster) -> String {
    let mut user = cluster.spawn_with("user", &[]).expect("spawn");
    let status = user.wait_exit(START_TIMEOUT).expect("exits by itself");
    assert!(!status.success(), "started anyway:\n{}", user.log());
    user.log()
}

/// Asserts that both the service and `shippy status` refuse with a sentence naming `path` and
/// containing `problem`.
fn assert_both_refuse(cluster: &mut Cluster, path: &Path, problem: &str) {
    let log = refused_start(cluster);
    let path = path.display().to_string();
    assert!(
        log.contains(&path) && log.contains(problem) && log.contains("registry.local.dir"),
        "service log lacks the sentence:\n{log}"
    );
    let status = cluster
        .cli_within(["status"], WAIT)
        .expect("status finishes");
    assert!(!status.status.success(), "status accepted it");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains(&path) && stderr.contains(problem),
        "status lacks the sentence: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_registry_directory_owned_by_another_user_is_refused() {
    let mut cluster = Cluster::local().expect("cluster");
    if my_uid(&cluster) != 0 {
        eprintln!("skipped: making a directory of another user needs root");
        return;
    }
    let dir = cluster.dir().join("planted");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    cluster.set_env("SHIPPY_REGISTRY__LOCAL__DIR", &dir.display().to_string());
    assert_both_refuse(&mut cluster, &dir, "owned by uid 65534");
}

#[test]
fn a_registry_directory_others_can_write_is_refused() {
    let mut cluster = Cluster::local().expect("cluster");
    let dir = cluster.dir().join("open");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    cluster.set_env("SHIPPY_REGISTRY__LOCAL__DIR", &dir.display().to_string());
    assert_both_refuse(&mut cluster, &dir, "writable by other users (mode 0777)");

    // A service directory inside an otherwise good registry counts too.
    let good = cluster.dir().join("good");
    fs::create_dir_all(good.join("user")).expect("mkdir");
    fs::set_permissions(good.join("user"), fs::Permissions::from_mode(0o777)).expect("chmod");
    cluster.set_env("SHIPPY_REGISTRY__LOCAL__DIR", &good.display().to_string());
    let log = refused_start(&mut cluster);
    assert!(
        log.contains(&good.join("user").display().to_string())
            && log.contains("writable by other users"),
        "{log}"
    );
}

#[test]
fn a_symlinked_base_directory_is_refused() {
    let mut cluster = Cluster::local().expect("cluster");
    let tmp = cluster.dir().join("tmp");
    let elsewhere = cluster.dir().join("elsewhere");
    fs::create_dir_all(&tmp).expect("mkdir");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    let base = tmp.join(format!("shippy-{}", my_uid(&cluster)));
    std::os::unix::fs::symlink(&elsewhere, &base).expect("symlink");
    use_default_layout(&mut cluster, &tmp);
    assert_both_refuse(&mut cluster, &base, "symbolic link");
    assert!(
        fs::read_dir(&elsewhere).expect("read").next().is_none(),
        "nothing was made through the link"
    );
}

/// The `.json` entries in `dir`, once there are any (bounded wait while `alive` holds).
fn wait_for_entries(dir: &Path, mut alive: impl FnMut() -> bool) -> Vec<PathBuf> {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let entries: Vec<PathBuf> = fs::read_dir(dir)
            .map(|read| {
                read.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        if !entries.is_empty() {
            return entries;
        }
        assert!(alive(), "the service exited before registering");
        assert!(
            std::time::Instant::now() < deadline,
            "no entry appeared in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_default_registry_directory_is_created_0700_with_entries_0600() {
    let mut cluster = Cluster::local().expect("cluster");
    let tmp = cluster.dir().join("tmp");
    fs::create_dir_all(&tmp).expect("mkdir");
    let base = tmp.join(format!("shippy-{}", my_uid(&cluster)));
    use_default_layout(&mut cluster, &tmp);
    let mut user = cluster.spawn_with("user", &[]).expect("spawn");
    let registry = base.join("registry");
    let entries = wait_for_entries(&registry.join("user"), || user.is_running());
    assert_eq!(mode(&base), 0o700, "base directory");
    assert_eq!(mode(&registry), 0o700, "registry directory");
    assert_eq!(mode(&registry.join("user")), 0o700, "service directory");
    for entry in &entries {
        assert_eq!(mode(entry), 0o600, "entry {}", entry.display());
    }
    let status = cluster
        .cli_within(["status"], WAIT)
        .expect("status finishes");
    assert!(
        text(&status).contains("SERVING"),
        "status does not see the user service: {}",
        text(&status)
    );
    let exit = user.stop(WAIT).expect("stops");
    assert!(exit.success(), "exit {exit:?}:\n{}", user.log());
    assert!(
        fs::read_dir(registry.join("user"))
            .expect("read")
            .flatten()
            .all(|e| e.path().extension().is_none_or(|x| x != "json")),
        "deregistered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_are_not_regular_files_do_not_break_discovery_or_shutdown() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut processes = cluster.start_all(1).await.expect("services start");
    let vessel_dir = cluster.local_registry_dir().join("vessel");

    // A FIFO: opening or reading it used to block `shippy status` (and the scanners) forever.
    let made = Command::new("mkfifo")
        .arg(vessel_dir.join("fifo.json"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let status = cluster
        .cli_within(["status"], WAIT)
        .expect("status finishes despite a FIFO entry");
    assert!(status.status.success(), "status: {}", text(&status));
    assert!(
        text(&status).contains(processes[1].address()),
        "{}",
        text(&status)
    );

    // A link to /dev/zero: reading it used to grow a process without bound.
    std::os::unix::fs::symlink("/dev/zero", vessel_dir.join("zero.json")).expect("symlink");
    let status = cluster
        .cli_within(["status"], WAIT)
        .expect("status finishes despite a /dev/zero link");
    assert!(status.status.success(), "status: {}", text(&status));
    assert!(
        text(&status).contains(processes[1].address()),
        "{}",
        text(&status)
    );

    // The consignment service still finds the vessel through the same directory.
    cluster.sign_up_and_login("registry-hardening@example.com");
    let file = cluster.dir().join("cargo.json");
    fs::write(&file, shippy_test_support::consignment_json(1_000, 1)).expect("write");
    let created = cluster
        .cli_within(
            ["consignment".as_ref(), "create".as_ref(), file.as_os_str()],
            WAIT,
        )
        .expect("create finishes");
    assert!(created.status.success(), "create: {}", text(&created));

    // And every service still exits cleanly on SIGTERM.
    for process in processes.iter_mut().rev() {
        let exit = process.stop(WAIT).expect("stops");
        assert!(
            exit.success(),
            "{} exit {exit:?}:\n{}",
            process.service,
            process.log()
        );
    }
    let logs: String = processes.iter().map(|p| p.log()).collect();
    assert!(
        logs.contains("skipping registry entry") && logs.contains("fifo.json"),
        "the bad entries were reported"
    );
}
