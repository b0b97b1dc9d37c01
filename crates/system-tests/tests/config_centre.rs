//! The etcd config centre: settings read at start-up, changes applied live, bad documents refused.

use std::time::{Duration, Instant};

use shippy_proto::vessel::v1::{
    GetRequest, Specification, vessel_service_client::VesselServiceClient,
};
use shippy_test_support::{Cluster, ServiceProcess, etcd::Etcd, http};
use tonic::Code;

async fn vessels(process: &ServiceProcess) -> VesselServiceClient<tonic::transport::Channel> {
    VesselServiceClient::connect(format!("http://{}", process.address()))
        .await
        .expect("connect")
}

/// The value of the config-centre counter with `outcome` on `process`'s admin port (0 if absent).
fn updates(process: &ServiceProcess, outcome: &str) -> f64 {
    let admin = process
        .instance
        .metadata
        .get("metrics_address")
        .expect("metrics_address registered");
    let (status, text) = http::get(admin, "/metrics", Duration::from_secs(5)).expect("admin port");
    assert_eq!(status, 200);
    let series = format!("shippy_config_updates_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn write(cluster: &Cluster, name: &str, text: &str) -> String {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write document");
    path.display().to_string()
}

#[tokio::test]
async fn settings_come_from_etcd_and_changes_apply_live() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, 3).await.expect("cluster");
    cluster.set_env("SHIPPY_CONFIG_CENTRE__ENABLED", "true");
    // Environment variables outrank the config centre; leave the log level to the centre.
    cluster.unset_env("SHIPPY_LOG__LEVEL");

    // Read at start-up: the fleet seed is off, so the store starts empty.
    let off = write(&cluster, "off.yaml", "vessel:\n  seed_fleet: false\n");
    let stored = cluster.cli_ok(["config", "set", "vessel", &off]);
    assert!(stored.contains("/config/vessel"), "{stored}");
    assert_eq!(
        cluster.cli_ok(["config", "get", "vessel"]),
        "vessel:\n  seed_fleet: false\n"
    );
    let vessel = cluster.start("vessel").await.expect("vessel starts");
    let mut client = vessels(&vessel).await;
    assert!(
        client
            .get_vessels(GetRequest::default())
            .await
            .expect("list")
            .into_inner()
            .vessels
            .is_empty()
    );

    // Changed live: seed switched on, log level raised, a rate limit set.
    let on = write(
        &cluster,
        "on.yaml",
        "vessel:\n  seed_fleet: true\nlog:\n  level: debug\nlimits:\n  requests_per_second: 1\n  burst: 3\n",
    );
    cluster.cli_ok(["config", "set", "vessel", &on]);
    let took = eventually("fleet seeded live", async || {
        client
            .get_vessels(GetRequest::default())
            .await
            .map(|r| r.into_inner().vessels.len() == 3)
            .unwrap_or(false)
    })
    .await;
    println!("config change applied {took:?} after `shippy config set`");
    assert!(
        vessel.log().contains("log level changed"),
        "log level applied"
    );
    let mut limited = 0;
    for _ in 0..10 {
        let spec = Specification {
            capacity: 1,
            max_weight: 1,
        };
        if let Err(status) = client.find_available(spec).await {
            assert_eq!(status.code(), Code::ResourceExhausted);
            limited += 1;
        }
    }
    assert!(
        limited >= 5,
        "rate limit applied live ({limited} of 10 refused)"
    );
    // The raised level shows what it hid: the access line of every call (debug).
    assert!(
        vessel.log().contains("call served"),
        "debug lines appear after the live change:\n{}",
        vessel.log()
    );
    // Health checks are not rate limited.
    shippy_shared::probe::wait_serving(vessel.address(), "", Duration::from_secs(2))
        .await
        .expect("health");

    // A setting that needs a restart is reported as such.
    let port = write(&cluster, "port.yaml", "server:\n  port: 1\n");
    cluster.cli_ok(["config", "set", "vessel", &port]);
    eventually("restart-needed warning", async || {
        vessel.log().contains("take effect after a restart")
    })
    .await;
    // Both changes are counted where Prometheus reads them; none was refused.
    assert_eq!(updates(&vessel, "applied"), 2.0);
    assert_eq!(updates(&vessel, "refused"), 0.0);
}

#[tokio::test]
async fn bad_documents_are_refused_and_the_last_good_settings_stay() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, 3).await.expect("cluster");
    cluster.set_env("SHIPPY_CONFIG_CENTRE__ENABLED", "true");
    let vessel = cluster.start("vessel").await.expect("vessel starts");

    // The CLI refuses before storing, naming the key.
    let wrong_type = write(&cluster, "bad.yaml", "vessel:\n  seed_fleet: sometimes\n");
    let out = cluster.cli(["config", "set", "vessel", &wrong_type]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not stored") && stderr.contains("seed_fleet"),
        "{stderr}"
    );
    let bad_port = write(&cluster, "port.yaml", "server:\n  port: lots\n");
    let out = cluster.cli(["config", "set", "vessel", &bad_port]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.port"),
        "shared keys are named too"
    );
    let unparseable = write(&cluster, "broken.yaml", "vessel: [unclosed\n");
    assert!(
        !cluster
            .cli(["config", "set", "vessel", &unparseable])
            .status
            .success()
    );
    assert!(
        cluster
            .cli_ok(["config", "get", "vessel"])
            .starts_with("no document"),
        "nothing stored"
    );

    // Written behind the CLI's back: the running service refuses it and keeps serving.
    let prefix = cluster.etcd_prefix().expect("prefix").to_owned();
    let mut client = etcd.client().await.expect("etcd client");
    client
        .put(
            format!("/{prefix}/config/vessel"),
            "log:\n  level: [nope\n",
            None,
        )
        .await
        .expect("put");
    eventually("bad document refused", async || {
        vessel.log().contains("config centre update refused")
    })
    .await;
    assert_eq!(updates(&vessel, "refused"), 1.0);
    assert_eq!(updates(&vessel, "applied"), 0.0);
    let mut vessels = vessels(&vessel).await;
    assert_eq!(
        vessels
            .get_vessels(GetRequest::default())
            .await
            .expect("still serving")
            .into_inner()
            .vessels
            .len(),
        3
    );

    // A service started while the document is bad refuses to start, naming the key.
    let error = cluster
        .start("vessel")
        .await
        .expect_err("bad document at start-up");
    assert!(
        error
            .to_string()
            .contains(&format!("/{prefix}/config/vessel")),
        "{error}"
    );
}
