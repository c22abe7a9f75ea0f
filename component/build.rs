//! Compiles the Dapr protos in `../proto` with protox (pure Rust, no system `protoc`) and
//! generates the tonic code with tonic-prost-build:
//!
//! - the components API (`dapr.proto.components.v1`), client and server: `roost serve` is the
//!   server, `roost doctor`, the online admin commands, `roost-sidecar` and the tests are
//!   clients. Its encoded descriptor set goes to `OUT_DIR` for gRPC reflection and for the
//!   descriptor test.
//! - Roost's admin service (`roost.admin.v1`, served on the same socket), client and server,
//!   with its descriptor set for reflection.
//!
//! (The app-facing runtime API is `roost-sidecar`'s, compiled there.)

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
    for file in components.iter().chain(&admin) {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&components, [&root])?;
    std::fs::write(
        out_dir.join("dapr_components_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // A written value stays `bytes::Bytes`, a slice of the request frame: no copy between
        // the wire and the engine. Answers' data are `Vec<u8>`: the engine's value moves in,
        // and encoding a `Vec` copies it out, where a `Bytes` from a `Vec` would be cloned
        // first (an allocation per value, a hundred per bulk get).
        .bytes(".dapr.proto.components.v1.SetRequest.value")
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

    Ok(())
}
