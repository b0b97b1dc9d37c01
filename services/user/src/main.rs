//! `shippy-user`: thin entry point; everything lives in the library.

use clap::Parser;
use shippy_shared::{args::ServiceArgs, lifecycle::shutdown_signal, telemetry};
use shippy_user::{IDENTITY, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before anything else, so a SIGTERM during start-up still shuts down in order.
    let shutdown = shutdown_signal();
    let args = ServiceArgs::parse();
    if args.is_healthcheck() {
        // A probe reads only the file and the environment: it must not depend on etcd.
        let settings: Settings = shippy_shared::settings::layered(args.config.as_deref(), None)?;
        return shippy_shared::args::healthcheck(
            settings.common.server.port,
            IDENTITY.grpc_service,
        )
        .await;
    }
    let settings = Settings::load(args.config.as_deref()).await?;
    telemetry::init(&settings.common.log).map_err(anyhow::Error::msg)?;
    shippy_user::build(settings)
        .await?
        .run_until(shutdown)
        .await?;
    Ok(())
}
