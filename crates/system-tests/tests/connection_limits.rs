//! The server edge is bounded and answers clearly, over real TCP and real HTTP/2 gRPC:
//! connections that never send the HTTP/2 preface are closed after `server.handshake_timeout_ms`;
//! beyond `server.max_connections` new connections are closed at once while calls on open ones go
//! on; a request whose bytes are not a protobuf message gets `INVALID_ARGUMENT` with a short
//! sentence (not `INTERNAL` with decoder details), and one over the 4 MiB message limit gets
//! `RESOURCE_EXHAUSTED` naming the limit.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use shippy_proto::vessel::v1::{GetRequest, Vessel, vessel_service_client::VesselServiceClient};
use shippy_shared::{
    config::{layered_with_env, services::VesselSettings},
    runtime,
};
use shippy_test_support::InProcess;
use shippy_vessel::VesselApp;
use tokio::{io::AsyncReadExt as _, net::TcpStream};
use tonic::{
    Code,
    codegen::{Service, http},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Bound of every wait; generous for a loaded 2-core machine, never a speed target.
const WAIT: Duration = Duration::from_secs(20);

/// A vessel service in this process with `server.*` set by `env` (as `SHIPPY_SERVER__*` would).
async fn vessel(registry: &std::path::Path, server: &[(&str, &str)]) -> InProcess {
    let mut env: std::collections::HashMap<String, String> = [
        (
            "SHIPPY_REGISTRY__LOCAL__DIR".to_owned(),
            registry.display().to_string(),
        ),
        ("SHIPPY_SHUTDOWN__DRAIN_MS".to_owned(), "0".to_owned()),
        ("SHIPPY_STORE__BACKEND".to_owned(), "memory".to_owned()),
    ]
    .into_iter()
    .collect();
    for (key, value) in server {
        env.insert(format!("SHIPPY_SERVER__{key}"), (*value).to_owned());
    }
    let settings: VesselSettings = layered_with_env(None, None, Some(env)).expect("test settings");
    let app = runtime::launch::<VesselApp>(settings)
        .await
        .expect("vessel builds");
    InProcess::spawn(app)
}

async fn client(service: &InProcess) -> VesselServiceClient<Channel> {
    VesselServiceClient::connect(format!("http://{}", service.address))
        .await
        .expect("connect")
}

async fn works(client: &mut VesselServiceClient<Channel>) {
    let vessels = client
        .get_vessels(GetRequest::default())
        .await
        .expect("GetVessels answers")
        .into_inner();
    assert!(!vessels.vessels.is_empty(), "the seeded fleet is listed");
}

/// Whether the server closes `stream` within [`WAIT`] (whatever it sent before, e.g. its HTTP/2
/// SETTINGS).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0; 256];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_speak_are_closed_while_grpc_calls_go_on() {
    let registry = tempfile::tempdir().expect("temp dir");
    let service = vessel(registry.path(), &[("HANDSHAKE_TIMEOUT_MS", "500")]).await;
    let mut grpc = client(&service).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(&service.address).await.expect("connect"));
    }
    works(&mut grpc).await;
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "silent connection {i} still open after {WAIT:?}"
        );
    }
    // The client's connection spoke, so it stays usable after the deadline.
    works(&mut grpc).await;
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_while_open_ones_keep_working() {
    let registry = tempfile::tempdir().expect("temp dir");
    let service = vessel(
        registry.path(),
        &[("MAX_CONNECTIONS", "3"), ("HANDSHAKE_TIMEOUT_MS", "60000")],
    )
    .await;
    let mut grpc = client(&service).await;
    works(&mut grpc).await;
    // Two more fill the cap; the server's HTTP/2 SETTINGS shows each was accepted.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&service.address).await.expect("connect");
        let mut first = [0; 9];
        tokio::time::timeout(WAIT, stream.read_exact(&mut first))
            .await
            .expect("accepted in time")
            .expect("server SETTINGS");
        held.push(stream);
    }
    let mut over = TcpStream::connect(&service.address).await.expect("connect");
    assert!(
        closed_by_server(&mut over).await,
        "a connection over the cap was kept"
    );
    works(&mut grpc).await;
    // A freed slot is usable again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = TcpStream::connect(&service.address).await.expect("connect");
        let mut first = [0; 9];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut first)).await
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
    }
    works(&mut grpc).await;
    service.finish().await;
}

/// A channel that sends a hand-framed gRPC request body to `path`, whatever the client asked for:
/// the way to put bytes on the wire that no generated client would send.
#[derive(Debug, Clone)]
struct Raw {
    channel: Channel,
    path: &'static str,
    /// The whole request body: 1 flag byte, a 4-byte big-endian length, the message.
    body: String,
}

impl Service<http::Request<tonic::body::Body>> for Raw {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut parts, _) = request.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.path_and_query = Some(self.path.parse().expect("path"));
        parts.uri = http::Uri::from_parts(uri).expect("uri");
        let body = tonic::body::Body::new(self.body.clone());
        self.channel.call(http::Request::from_parts(parts, body))
    }
}

/// Sends `body` as a `FindAvailable` request; returns the status it got.
async fn find_available_raw(service: &InProcess, body: String) -> tonic::Status {
    let channel = Channel::from_shared(format!("http://{}", service.address))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let raw = Raw {
        channel,
        path: "/shippy.vessel.v1.VesselService/FindAvailable",
        body,
    };
    HealthClient::new(raw)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("refused")
}

/// A gRPC frame (uncompressed) declaring `declared` bytes and holding `message` (ASCII, so it
/// fits a `String` body).
fn frame(declared: u32, message: &str) -> String {
    let mut frame = String::from("\0");
    for byte in declared.to_be_bytes() {
        assert!(byte.is_ascii(), "length byte {byte:#x} not ASCII");
        frame.push(char::from(byte));
    }
    frame.push_str(message);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_gets_invalid_argument_without_internals() {
    let registry = tempfile::tempdir().expect("temp dir");
    let service = vessel(registry.path(), &[]).await;

    // 0x7f: field 15 with wire type 7, which does not exist.
    let status = find_available_raw(&service, frame(3, "\x7f\x7f\x7f")).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "the request is not a valid protobuf message"
    );

    // The body ends inside the message it announced.
    let status = find_available_raw(&service, frame(10, "\x08")).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().contains("EOF"), "{status:?}");

    // Well-formed requests still work on the same server.
    works(&mut client(&service).await).await;
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_4_mib_gets_resource_exhausted_naming_the_limit() {
    let registry = tempfile::tempdir().expect("temp dir");
    let service = vessel(registry.path(), &[]).await;

    // A real client with a 5 MiB field.
    let status = client(&service)
        .await
        .create(Vessel {
            name: "x".repeat(5 << 20),
            capacity: 1,
            max_weight: 1,
            ..Vessel::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("larger than the 4 MiB"),
        "{status:?}"
    );
    assert!(
        !status.message().contains("decoded message length"),
        "{status:?}"
    );

    // A frame that only announces 5 MiB is refused the same way.
    let status = find_available_raw(&service, frame(5 << 20, "")).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    works(&mut client(&service).await).await;
    service.finish().await;
}
