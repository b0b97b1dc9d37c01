//! Compiles `proto/` with protox (pure Rust), so building this crate needs no system `protoc`.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "shippy/consignment/v1/consignment.proto",
    "shippy/vessel/v1/vessel.proto",
    "shippy/user/v1/user.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    // Kept for server reflection and the REST gateway (see `FILE_DESCRIPTOR_SET`). Encoded by
    // protox itself: `prost_types` would drop the options' extensions (`google.api.http`), which
    // the gateway's routes are read from.
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("shippy_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        // prost's codec behind a count of each message's fields (see `src/codec.rs`).
        .codec_path("crate::codec::BoundedCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
