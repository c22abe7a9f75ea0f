//! Compiles the Dapr components API protos in `../proto` with protox (pure Rust, no system
//! `protoc`) and generates the tonic services with tonic-prost-build. The encoded descriptor
//! set is also written to `OUT_DIR` for gRPC reflection and for the descriptor test.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        root.join("dapr/proto/components/v1/common.proto"),
        root.join("dapr/proto/components/v1/state.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("dapr_components_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Values and data stay `bytes::Bytes`: no copy between the wire and the engine.
        .bytes(".dapr.proto.components.v1")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
