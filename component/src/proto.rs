//! The generated Dapr components API (`dapr.proto.components.v1`), with its descriptor set.
//!
//! These types stay at the edge: the service modules convert them to engine requests and back.

#![allow(clippy::all, missing_docs, missing_debug_implementations)]

tonic::include_proto!("dapr.proto.components.v1");

/// The encoded `FileDescriptorSet` of `common.proto` and `state.proto` (plus imports), served
/// through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dapr_components_descriptor.bin"));

/// Roost's admin service on the component socket (`roost.admin.v1`).
#[allow(clippy::all, missing_docs, missing_debug_implementations)]
pub mod admin {
    tonic::include_proto!("roost.admin.v1");

    /// The encoded `FileDescriptorSet` of `admin.proto`, served through gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/roost_admin_descriptor.bin"));
}
