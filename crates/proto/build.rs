//! Compiles `proto/` with protox (pure Rust), so building this crate needs no system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "shippy/consignment/v1/consignment.proto",
    "shippy/vessel/v1/vessel.proto",
    "shippy/user/v1/user.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(PROTOS, [&root])?;
    // Kept for server reflection (see `FILE_DESCRIPTOR_SET`).
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("shippy_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
