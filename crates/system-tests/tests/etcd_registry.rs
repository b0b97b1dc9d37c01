//! The etcd registry against a real etcd (Debian's etcd-server): registration, eviction, recovery
//! after etcd restarts, deleted keys, and a 3-node cluster with a member down.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use shippy_proto::consignment::v1::{
    Consignment, Container, shipping_service_client::ShippingServiceClient,
};
use shippy_test_support::{Cluster, ServiceProcess, etcd::Etcd};
use tonic::Request;

const TTL_SECS: u64 = 3;

async fn try_keys(etcd: &Etcd, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut client = etcd.client().await?;
    let response = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

async fn keys(etcd: &Etcd, prefix: &str) -> Vec<String> {
    try_keys(etcd, prefix).await.expect("etcd answers")
}

async fn wait_keys(etcd: &Etcd, prefix: &str, count: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_secs(2), try_keys(etcd, prefix)).await
            && found.len() == count
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{prefix} did not reach {count} keys within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cargo() -> Request<Consignment> {
    Request::new(Consignment {
        description: "etcd cargo".into(),
        weight: 100,
        containers: vec![Container {
            customer_id: "c".into(),
            origin: "Rotterdam".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

async fn create(process: &ServiceProcess, token: &str) -> Result<(), tonic::Status> {
    let mut client = ShippingServiceClient::connect(format!("http://{}", process.address()))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = cargo();
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    client.create_consignment(request).await.map(|_| ())
}

#[tokio::test]
async fn instances_register_under_the_documented_keys_and_share_traffic() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, TTL_SECS).await.expect("cluster");
    let processes = cluster.start_all(3).await.expect("services start");
    let prefix = format!("/{}/services/", cluster.etcd_prefix().expect("prefix"));

    let vessels = keys(&etcd, &format!("{prefix}vessel/")).await;
    assert_eq!(vessels.len(), 3, "{vessels:?}");
    for (key, process) in vessels
        .iter()
        .zip(processes[1..4].iter().map(|p| &p.instance))
    {
        assert!(key.starts_with(&format!("{prefix}vessel/")), "{key}");
        assert!(
            vessels.contains(&format!("{prefix}vessel/{}", process.id)),
            "{key}"
        );
    }
    let mut client = etcd.client().await.expect("client");
    let value = client
        .get(vessels[0].as_str(), None)
        .await
        .expect("get")
        .kvs()[0]
        .value()
        .to_vec();
    let record: serde_json::Value = serde_json::from_slice(&value).expect("JSON value");
    for field in ["id", "name", "version", "address", "metadata"] {
        assert!(record.get(field).is_some(), "{field} missing in {record}");
    }

    let token = cluster.sign_up_and_login("etcd@example.com");
    for _ in 0..30 {
        create(&processes[4], &token).await.expect("created");
    }
    let counts: Vec<usize> = processes[1..4]
        .iter()
        .map(|p| p.log().matches("vessel found").count())
        .collect();
    assert!(counts.iter().all(|&n| n >= 5), "uneven: {counts:?}");

    let out = cluster.cli_ok(["status"]);
    assert_eq!(out.matches("SERVING").count(), 5, "{out}");
}

#[tokio::test]
async fn killed_instance_key_expires_within_the_ttl_and_stopped_one_goes_at_once() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, TTL_SECS).await.expect("cluster");
    let mut killed = cluster.start("vessel").await.expect("vessel");
    let mut stopped = cluster.start("vessel").await.expect("vessel");
    let prefix = format!(
        "/{}/services/vessel/",
        cluster.etcd_prefix().expect("prefix")
    );
    wait_keys(&etcd, &prefix, 2, Duration::from_secs(5)).await;

    let start = Instant::now();
    assert!(
        stopped
            .stop(Duration::from_secs(20))
            .expect("stops")
            .success(),
        "SIGTERM exits 0"
    );
    // SIGTERM deregisters before the drain period, so the key is gone by the time the process exits.
    assert_eq!(
        keys(&etcd, &prefix).await.len(),
        1,
        "key deleted on clean stop"
    );
    println!(
        "clean stop: key gone and process exited after {:?}",
        start.elapsed()
    );

    killed.kill();
    let evicted = wait_keys(&etcd, &prefix, 0, Duration::from_secs(TTL_SECS + 3)).await;
    println!("SIGKILL: key evicted after {evicted:?} (TTL {TTL_SECS} s)");
    assert!(
        evicted <= Duration::from_secs(TTL_SECS + 2),
        "evicted after {evicted:?}"
    );
}

#[tokio::test]
async fn services_reregister_by_themselves_after_etcd_restarts_and_calls_keep_working() {
    let mut etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, TTL_SECS).await.expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("restart@example.com");
    create(&processes[2], &token).await.expect("created before");
    let prefix = format!("/{}/services/", cluster.etcd_prefix().expect("prefix"));
    assert_eq!(keys(&etcd, &prefix).await.len(), 3);

    // While etcd is down, callers keep the last known instance set.
    etcd.stop();
    for _ in 0..3 {
        create(&processes[2], &token)
            .await
            .expect("works while etcd is down");
    }
    // Longer than the TTL: the leases expire, the keys go.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    etcd.restart().await.expect("etcd restarts");
    let healthy = Instant::now();
    // Each service notices on its own and registers again with a fresh lease.
    for process in &processes {
        while !process.log().contains("re-registered (etcd)") {
            assert!(
                healthy.elapsed() < Duration::from_secs(30),
                "{} did not re-register",
                process.service
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "etcd restart: all 3 services re-registered within {:?} of etcd being healthy",
        healthy.elapsed()
    );
    // The new leases are kept alive: past a TTL the keys are still there.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    assert_eq!(keys(&etcd, &prefix).await.len(), 3);
    for _ in 0..5 {
        create(&processes[2], &token)
            .await
            .expect("works after the restart");
    }
}

#[tokio::test]
async fn a_deleted_registration_is_put_back() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, TTL_SECS).await.expect("cluster");
    let vessel = cluster.start("vessel").await.expect("vessel");
    let key = format!(
        "/{}/services/vessel/{}",
        cluster.etcd_prefix().expect("prefix"),
        vessel.instance.id
    );
    let mut client = etcd.client().await.expect("client");
    client.delete(key.as_str(), None).await.expect("delete");
    let back = wait_keys(&etcd, &key, 1, Duration::from_secs(10)).await;
    println!("deleted key put back after {back:?}");
    assert!(vessel.log().contains("registration key was deleted"));
}

#[tokio::test]
async fn three_node_cluster_with_a_member_down() {
    let mut etcd = Etcd::start_cluster(3).await.expect("3-node etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, TTL_SECS).await.expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("quorum@example.com");
    etcd.kill_member(0);
    let prefix = format!("/{}/services/", cluster.etcd_prefix().expect("prefix"));
    // Past a TTL, registrations are still alive (kept by the remaining quorum), and a new instance
    // can register and be found.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    assert_eq!(keys(&etcd, &prefix).await.len(), 3);
    let _extra = cluster
        .start("vessel")
        .await
        .expect("registers with a member down");
    for _ in 0..5 {
        create(&processes[2], &token)
            .await
            .expect("works with a member down");
    }
}
