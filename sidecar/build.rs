//! Compiles the state part of the app-facing runtime API (`dapr.proto.runtime.v1` and the
//! `dapr.proto.common.v1` messages it uses, in `../proto`) with protox (pure Rust, no system
//! `protoc`), server side only: the sidecar serves it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let runtime = [
        root.join("dapr/proto/common/v1/common.proto"),
        root.join("dapr/proto/runtime/v1/dapr.proto"),
    ];
    for file in &runtime {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&runtime, [&root])?;
    tonic_prost_build::configure()
        .bytes(".dapr.proto.runtime.v1")
        .bytes(".dapr.proto.common.v1")
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
