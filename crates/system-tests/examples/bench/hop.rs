//! The ceiling a service is measured against, in the same run: a bare tonic server answering
//! `VesselService/FindAvailable` with a fixed vessel (no discovery, no layers, no store), run as
//! a child process of this benchmark (`bench --bare-vessel`), so its CPU can be read from /proc
//! like the services'. A regression then shows as a ratio to a bare hop, not as an absolute that
//! moves with the machine.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use shippy_proto::vessel::v1::{
    self as pb, GetRequest, Specification, Vessel,
    vessel_service_server::{VesselService, VesselServiceServer},
};
use tonic::{Request, Response, Status};

/// The argument that makes this binary the bare server.
pub(crate) const BARE_SERVER_ARG: &str = "--bare-vessel";

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
struct Bare;

#[tonic::async_trait]
impl VesselService for Bare {
    async fn find_available(
        &self,
        request: Request<Specification>,
    ) -> Result<Response<pb::Response>, Status> {
        let spec = request.into_inner();
        Ok(Response::new(pb::Response {
            vessel: Some(Vessel {
                id: "bare".into(),
                name: "Bare".into(),
                capacity: spec.capacity.max(1),
                max_weight: spec.max_weight.max(1),
                available: true,
                ..Vessel::default()
            }),
            ..pb::Response::default()
        }))
    }

    async fn create(&self, _: Request<Vessel>) -> Result<Response<pb::Response>, Status> {
        Err(Status::unimplemented("bare"))
    }

    async fn get_vessels(&self, _: Request<GetRequest>) -> Result<Response<pb::Response>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// Serves the bare vessel on a free loopback port, printing `LISTENING <addr>` once it listens.
pub(crate) async fn serve_bare() -> anyhow::Result<()> {
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
        .add_service(VesselServiceServer::new(Bare))
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
    /// Starts `<this binary> --bare-vessel` and waits for its address.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(BARE_SERVER_ARG)
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
