//! Live settings reach each service through its own subscription: two services in one process
//! keep their own rate limits, and a change to one leaves the other alone.

use std::{sync::Arc, time::Duration};

use shippy_proto::vessel::v1::{Specification, vessel_service_client::VesselServiceClient};
use shippy_shared::{
    config::{LimitSettings, layered_with_env, services::VesselSettings},
    runtime,
};
use shippy_test_support::InProcess;
use shippy_vessel::VesselApp;
use tokio::sync::watch;
use tonic::{Code, transport::Channel};

/// Bound of every "until" wait; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

fn settings(registry: &std::path::Path) -> VesselSettings {
    let env = [
        (
            "SHIPPY_REGISTRY__LOCAL__DIR",
            registry.display().to_string(),
        ),
        ("SHIPPY_SHUTDOWN__DRAIN_MS", "0".to_owned()),
        ("SHIPPY_STORE__BACKEND", "memory".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    layered_with_env(None, None, Some(env)).expect("test settings")
}

fn limited(mut settings: VesselSettings, requests_per_second: u32) -> Arc<VesselSettings> {
    settings.common.limits = LimitSettings {
        requests_per_second,
        burst: 1,
        ..LimitSettings::default()
    };
    Arc::new(settings)
}

/// How many of `calls` quick calls the service refused with RESOURCE_EXHAUSTED.
async fn refused(client: &mut VesselServiceClient<Channel>, calls: usize) -> usize {
    let mut refused = 0;
    for _ in 0..calls {
        let spec = Specification {
            capacity: 1,
            max_weight: 1,
        };
        match client.find_available(spec).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("unexpected answer: {status:?}"),
        }
    }
    refused
}

async fn client(service: &InProcess) -> VesselServiceClient<Channel> {
    VesselServiceClient::connect(format!("http://{}", service.address))
        .await
        .expect("connect")
}

#[tokio::test]
async fn two_services_in_one_process_keep_their_own_live_settings() {
    let registry = tempfile::tempdir().expect("temp dir");
    let base = settings(registry.path());
    // One rate-limited to 1 call/s, one unlimited, side by side in this process.
    let (to_a, settings_a) = watch::channel(limited(base.clone(), 1));
    let (to_b, settings_b) = watch::channel(Arc::new(base.clone()));
    let a = runtime::build::<VesselApp>(settings_a, None)
        .await
        .expect("build a");
    let b = runtime::build::<VesselApp>(settings_b, None)
        .await
        .expect("build b");
    let (a, b) = (InProcess::spawn(a), InProcess::spawn(b));
    let (mut client_a, mut client_b) = (client(&a).await, client(&b).await);

    assert!(refused(&mut client_a, 10).await >= 5, "a is limited");
    assert_eq!(refused(&mut client_b, 10).await, 0, "b is not");

    // Live: limit b, lift a's limit. Each applies only its own change.
    to_b.send_replace(limited(base.clone(), 1));
    to_a.send_replace(Arc::new(base));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (now_a, now_b) = (
            refused(&mut client_a, 5).await,
            refused(&mut client_b, 5).await,
        );
        if now_a == 0 && now_b >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "changes not applied: a refused {now_a}, b refused {now_b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.finish().await;
    b.finish().await;
}
