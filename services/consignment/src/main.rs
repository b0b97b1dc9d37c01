//! `shippy-consignment`: thin entry point; everything lives in the library.

use clap::Parser;
use shippy_consignment::{IDENTITY, Settings};
use shippy_shared::{args::ServiceArgs, lifecycle::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    shippy_consignment::build(settings)
        .await?
        .run_until(shutdown_signal())
        .await?;
    Ok(())
}
