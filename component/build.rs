//! Compiles the Dapr protos in `../proto` with protox (pure Rust, no system `protoc`) and
//! generates the tonic code with tonic-prost-build:
//!
//! - the components API (`dapr.proto.components.v1`), client and server: `roost serve` is the
//!   server, `roost sidecar`, `roost doctor` and the tests are clients. Its encoded descriptor
//!   set goes to `OUT_DIR` for gRPC reflection and for the descriptor test.
//! - Roost's admin service (`roost.admin.v1`, served on the same socket), client and server,
//!   with its descriptor set for reflection;
//! - the state part of the app-facing runtime API (`dapr.proto.runtime.v1`), server only:
//!   `roost sidecar` serves it.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let components = [
        root.join("dapr/proto/components/v1/common.proto"),
        root.join("dapr/proto/components/v1/state.proto"),
    ];
    let admin = [root.join("roost/admin/v1/admin.proto")];
    let runtime = [
        root.join("dapr/proto/common/v1/common.proto"),
        root.join("dapr/proto/runtime/v1/dapr.proto"),
    ];
    for file in components.iter().chain(&runtime).chain(&admin) {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&components, [&root])?;
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

    let descriptors = protox::compile(&admin, [&root])?;
    std::fs::write(
        out_dir.join("roost_admin_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".roost.admin.v1")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    let descriptors = protox::compile(&runtime, [&root])?;
    tonic_prost_build::configure()
        .bytes(".dapr.proto.runtime.v1")
        .bytes(".dapr.proto.common.v1")
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
