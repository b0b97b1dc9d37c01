//! `server.worker_threads` sizes a service binary's async runtime: with the real binary, the
//! setting from the environment gives that many worker threads (as `/metrics` reports them), no
//! setting gives one per usable core, a value from the config file works the same, and a value out
//! of range stops the binary with a message naming the key.

use std::time::Duration;

use shippy_test_support::{Cluster, ServiceProcess};

/// Bound of every wait; generous for a loaded 2-core machine, never a speed target.
const WAIT: Duration = Duration::from_secs(20);

fn workers(process: &ServiceProcess) -> f64 {
    process
        .metric("shippy_runtime_worker_threads", &[])
        .expect("shippy_runtime_worker_threads in /metrics")
}

#[tokio::test]
async fn worker_threads_sizes_the_runtime_from_the_environment_or_the_file() {
    let mut cluster = Cluster::local().expect("cluster");
    let one = cluster
        .start_with("vessel", &[("SHIPPY_SERVER__WORKER_THREADS", "1")])
        .await
        .expect("vessel with one worker starts");
    assert_eq!(workers(&one), 1.0);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = cluster.start("vessel").await.expect("vessel starts");
    assert_eq!(
        workers(&default),
        cores as f64,
        "one worker per usable core"
    );

    let file = cluster.dir().join("three-workers.yaml");
    std::fs::write(&file, "server:\n  worker_threads: 3\n").expect("write settings file");
    let from_file = cluster
        .start_with(
            "vessel",
            &[("SHIPPY_CONFIG_FILE", file.to_str().expect("utf-8 path"))],
        )
        .await
        .expect("vessel with a settings file starts");
    assert_eq!(workers(&from_file), 3.0);
}

#[tokio::test]
async fn a_worker_count_out_of_range_stops_the_binary_naming_the_key() {
    let mut cluster = Cluster::local().expect("cluster");
    for bad in ["300", "-1", "many"] {
        let mut vessel = cluster
            .spawn_with("vessel", &[("SHIPPY_SERVER__WORKER_THREADS", bad)])
            .expect("spawn");
        let status = vessel.wait_exit(WAIT).expect("exits by itself");
        assert!(!status.success(), "{bad}: {status}");
        let log = vessel.log();
        assert!(log.contains("worker_threads"), "{bad}: {log}");
        assert!(!log.contains("panicked"), "{bad}: {log}");
    }
}
