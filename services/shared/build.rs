//! Turns `services/catalog.toml`, the one table of shippy services, into Rust constants
//! (`$OUT_DIR/catalog.rs`, included by `src/catalog.rs`), so the table has one source that Rust,
//! the Dockerfile, the Makefile and the drift check all read.

use std::{env, fmt::Write as _, fs, path::PathBuf};

use serde::Deserialize;

#[derive(Deserialize)]
struct Catalog {
    service: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    grpc_service: String,
    binary: String,
    port: u16,
    #[serde(default)]
    http_port: Option<u16>,
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let path = manifest.join("../catalog.toml");
    println!("cargo::rerun-if-changed={}", path.display());
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let catalog: Catalog =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} is invalid: {e}", path.display()));
    let mut out = String::new();
    let mut names = Vec::new();
    for entry in &catalog.service {
        assert!(
            !entry.name.is_empty()
                && entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-'),
            "catalog: service name {:?} must be lower-case letters and '-'",
            entry.name
        );
        let constant = entry.name.to_uppercase().replace('-', "_");
        writeln!(
            out,
            "/// The `{name}` service (`{grpc}`, binary `{binary}`, port {port}).\n\
             pub const {constant}: ServiceSpec = ServiceSpec {{ name: {name:?}, grpc_service: {grpc:?}, binary: {binary:?}, port: {port}, http_port: {http_port:?} }};",
            name = entry.name,
            grpc = entry.grpc_service,
            binary = entry.binary,
            port = entry.port,
            http_port = entry.http_port,
        )
        .expect("write to a String");
        names.push(constant);
    }
    writeln!(
        out,
        "/// Every service, in the order of the catalog.\npub const ALL: &[ServiceSpec] = &[{}];",
        names.join(", ")
    )
    .expect("write to a String");
    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("catalog.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
