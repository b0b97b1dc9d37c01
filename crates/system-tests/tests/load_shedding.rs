//! Load shedding with the real binary: a vessel service whose `limits.max_concurrent_calls` comes
//! from the etcd config centre has as many calls in flight as its limit allows; every further call
//! is refused at once with `UNAVAILABLE` (none is queued), health checks still answer SERVING, and
//! the shed counter on its admin port equals the refusals seen. With the limit raised live, the
//! same calls all go through.
//!
//! The calls in flight are held open without slowing any handler down: each is a real call to
//! `GetVessels` whose request message never arrives (the client's request stream stays open), so
//! the server has admitted it and waits for its body. That keeps exactly `LIMIT` calls in flight
//! for as long as the test needs, on any machine, with no sleeps.

use std::time::{Duration, Instant};

use shippy_proto::vessel::v1::{GetRequest, vessel_service_client::VesselServiceClient};
use shippy_test_support::{Cluster, ServiceProcess, etcd::Etcd, http};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// The configured limit of calls in flight.
const LIMIT: usize = 2;
/// Calls made while the limit is taken.
const EXTRA: usize = 12;
/// Bound of every wait; generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);
const GET_VESSELS: &str = "/shippy.vessel.v1.VesselService/GetVessels";

/// A codec for calls that never send or receive a message: it is never asked to encode (the
/// request stream yields nothing) nor to decode (the held calls are never answered).
#[derive(Debug, Clone, Copy, Default)]
struct Silent;

impl Codec for Silent {
    type Encode = ();
    type Decode = ();
    type Encoder = Silent;
    type Decoder = Silent;

    fn encoder(&mut self) -> Self::Encoder {
        Silent
    }

    fn decoder(&mut self) -> Self::Decoder {
        Silent
    }
}

impl Encoder for Silent {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, (): (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for Silent {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, _: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        Err(Status::internal("a held call got an answer"))
    }
}

/// Starts a `GetVessels` call whose request never completes; it stays in flight until aborted.
fn hold(channel: Channel) -> tokio::task::JoinHandle<Result<(), Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        grpc.client_streaming(
            Request::new(tokio_stream::pending::<()>()),
            PathAndQuery::from_static(GET_VESSELS),
            Silent,
        )
        .await
        .map(|_| ())
    })
}

/// Sums the samples of `metric` on `process`'s admin port whose labels contain `labels`.
fn metric(process: &ServiceProcess, metric: &str, labels: &str) -> f64 {
    let admin = process
        .instance
        .metadata
        .get("metrics_address")
        .expect("metrics_address registered");
    let (status, text) = http::get(admin, "/metrics", Duration::from_secs(5)).expect("admin port");
    assert_eq!(status, 200);
    text.lines()
        .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
        .filter(|rest| rest.contains(labels))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn in_flight(vessel: &ServiceProcess) -> f64 {
    metric(
        vessel,
        "shippy_server_in_flight_calls",
        r#"grpc_service="shippy.vessel.v1.VesselService""#,
    )
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes `EXTRA` concurrent `GetVessels` calls; returns how many were answered and how many shed.
async fn burst(client: &VesselServiceClient<Channel>) -> (usize, usize) {
    let calls: Vec<_> = (0..EXTRA)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut request = Request::new(GetRequest::default());
                request.set_timeout(WAIT);
                client.get_vessels(request).await
            })
        })
        .collect();
    let (mut answered, mut shed) = (0, 0);
    for call in calls {
        match call.await.expect("call task") {
            Ok(_) => answered += 1,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    status.message().contains("overloaded"),
                    "one clear sentence: {status:?}"
                );
                shed += 1;
            }
            Err(status) => panic!("unexpected answer: {status:?}"),
        }
    }
    (answered, shed)
}

fn write(cluster: &Cluster, name: &str, text: &str) -> String {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write document");
    path.display().to_string()
}

#[tokio::test]
async fn calls_beyond_the_limit_are_shed_health_answers_and_a_live_raise_admits_them() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let mut cluster = Cluster::on_etcd(&etcd, 3).await.expect("cluster");
    cluster.set_env("SHIPPY_CONFIG_CENTRE__ENABLED", "true");
    let tight = write(
        &cluster,
        "tight.yaml",
        &format!("limits:\n  max_concurrent_calls: {LIMIT}\n"),
    );
    cluster.cli_ok(["config", "set", "vessel", &tight]);
    let vessel = cluster.start("vessel").await.expect("vessel starts");
    let address = format!("http://{}", vessel.address());
    let client = VesselServiceClient::connect(address.clone())
        .await
        .expect("connect");

    // Below the limit, one call at a time: every call goes through.
    for _ in 0..EXTRA {
        client
            .clone()
            .get_vessels(GetRequest::default())
            .await
            .expect("a call below the limit is served");
    }

    // The limit taken by calls in flight.
    let holding = tonic::transport::Endpoint::from_shared(address)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let held: Vec<_> = (0..LIMIT).map(|_| hold(holding.clone())).collect();
    eventually("the held calls in flight", || {
        in_flight(&vessel) == LIMIT as f64
    })
    .await;

    // Every further call is shed, and counted; health is never shed.
    let (answered, shed) = burst(&client).await;
    assert_eq!((answered, shed), (0, EXTRA), "all beyond the limit shed");
    shippy_shared::probe::wait_serving(vessel.address(), "", Duration::from_secs(5))
        .await
        .expect("health answers SERVING during the overload");
    shippy_shared::probe::wait_serving(
        vessel.address(),
        "shippy.vessel.v1.VesselService",
        Duration::from_secs(5),
    )
    .await
    .expect("the service's health too");
    assert_eq!(
        metric(
            &vessel,
            "shippy_server_shed_total",
            r#"grpc_method="GetVessels""#
        ),
        shed as f64,
        "the shed counter equals the UNAVAILABLE answers"
    );
    assert_eq!(in_flight(&vessel), LIMIT as f64, "shed calls never queued");

    // Raised live through the config centre: the same burst, beside the held calls, goes through.
    let raised = write(
        &cluster,
        "raised.yaml",
        "limits:\n  max_concurrent_calls: 64\n",
    );
    cluster.cli_ok(["config", "set", "vessel", &raised]);
    eventually("the raised limit applied", || {
        vessel.log().contains("limits changed")
    })
    .await;
    assert_eq!(
        burst(&client).await,
        (EXTRA, 0),
        "nothing shed after the raise"
    );
    assert_eq!(
        metric(
            &vessel,
            "shippy_server_shed_total",
            r#"grpc_method="GetVessels""#
        ),
        shed as f64,
        "no more shed"
    );

    // Abandoned calls give their slots back: with the tight limit again, new calls take them.
    for call in held {
        call.abort();
    }
    eventually("the held calls gone", || in_flight(&vessel) == 0.0).await;
    cluster.cli_ok(["config", "set", "vessel", &tight]);
    eventually("the tight limit applied again", || {
        vessel.log().matches("limits changed").count() == 2
    })
    .await;
    let held: Vec<_> = (0..LIMIT).map(|_| hold(holding.clone())).collect();
    eventually("new calls admitted to the freed slots", || {
        in_flight(&vessel) == LIMIT as f64
    })
    .await;
    assert_eq!(burst(&client).await, (0, EXTRA), "the limit holds again");
    for call in held {
        assert!(!call.is_finished(), "a held call was answered");
        call.abort();
    }
}
