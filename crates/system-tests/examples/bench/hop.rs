//! The ceiling a service is measured against, in the same run: a bare tonic server answering
//! `VesselService/FindAvailable` with a fixed vessel (no discovery, no layers, no store), run as
//! a child process of this benchmark (`bench --bare-vessel`), so its CPU can be read from /proc
//! like the services'. A regression then shows as a ratio to a bare hop, not as an absolute that
//! moves with the machine.
//!
//! With `--request-id` after it, every answer of the bare server also carries a fresh
//! `x-request-id`, made as the services make theirs: the one thing every shippy answer to a caller
//! that sent no id (as this bench's load sends none) has that the bare server's lacks, and a cost
//! to both ends of the call (HPACK coding of a new value). The
//! bench measures both, so the share of a hop's cost that is the header shows apart from the
//! share that is the service's own work.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use shippy_proto::vessel::v1::{
    self as pb, GetRequest, Specification, Vessel,
    vessel_service_server::{VesselService, VesselServiceServer},
};
use shippy_shared::discovery::trace::{REQUEST_ID_HEADER, RequestId};
use tonic::{Request, Response, Status, metadata::MetadataValue};

/// The argument that makes this binary the bare server.
pub(crate) const BARE_SERVER_ARG: &str = "--bare-vessel";
/// The argument after [`BARE_SERVER_ARG`] that makes its answers carry `x-request-id`.
pub(crate) const REQUEST_ID_ARG: &str = "--request-id";

/// CPU time (user + system) a process has used, in seconds, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which the kernel fixes at 100 for user space on every mainstream
    // architecture, whatever its internal tick rate.
    Some(ticks / 100.0)
}

#[derive(Debug, Default)]
struct Bare {
    /// Whether every answer carries a fresh `x-request-id`.
    request_id: bool,
}

#[tonic::async_trait]
impl VesselService for Bare {
    async fn find_available(
        &self,
        request: Request<Specification>,
    ) -> Result<Response<pb::Response>, Status> {
        let spec = request.into_inner();
        let mut response = Response::new(pb::Response {
            vessel: Some(Vessel {
                id: "bare".into(),
                name: "Bare".into(),
                capacity: spec.capacity.max(1),
                max_weight: spec.max_weight.max(1),
                available: true,
                ..Vessel::default()
            }),
            ..pb::Response::default()
        });
        if self.request_id {
            let id = MetadataValue::try_from(RequestId::generate().as_str())
                .map_err(|_| Status::internal("a request id that is not a header value"))?;
            response.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        Ok(response)
    }

    async fn create(&self, _: Request<Vessel>) -> Result<Response<pb::Response>, Status> {
        Err(Status::unimplemented("bare"))
    }

    async fn get_vessels(&self, _: Request<GetRequest>) -> Result<Response<pb::Response>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// Serves the bare vessel on a free loopback port, printing `LISTENING <addr>` once it listens;
/// with `request_id`, its answers carry `x-request-id`.
pub(crate) async fn serve_bare(request_id: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    use tokio_stream::StreamExt as _;
    // Nagle off, as the services have it (tonic sets it only on listeners it binds itself):
    // without it, small answers wait for delayed ACKs and the ceiling looks 40 ms slow at p99.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    });
    tonic::transport::Server::builder()
        .add_service(VesselServiceServer::new(Bare { request_id }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The bare server, as a child process.
pub(crate) struct BareServer {
    child: Child,
    /// Its address.
    pub(crate) address: String,
}

impl BareServer {
    /// Starts `<this binary> --bare-vessel` (with `--request-id` when `request_id`) and waits for
    /// its address.
    pub(crate) fn start(request_id: bool) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(BARE_SERVER_ARG)
            .args(request_id.then_some(REQUEST_ID_ARG))
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| anyhow::anyhow!("the bare server said {line:?}"))?
            .to_owned();
        Ok(Self { child, address })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
