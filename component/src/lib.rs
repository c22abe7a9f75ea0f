//! `roost-component`: Roost served to Dapr as a pluggable state store.
//!
//! daprd discovers the component through a Unix socket (`<folder>/<name>.sock`, type
//! `state.<name>`), lists its services through gRPC reflection v1alpha, then calls `Init` and
//! `Features` for each component YAML that uses it, with the YAML's name in the
//! `x-component-instance` header, and afterwards the state operations. This crate implements
//! that contract (`../shared/spec/dapr-pluggable-spec.md`) on top of `roost-engine`:
//!
//! - [`server`]: the gRPC server on the socket, reflection, health, graceful shutdown;
//! - [`socket`]: socket folder resolution, stale sockets, permissions;
//! - [`instances`]: one keyspace per component instance, persisted configuration;
//! - [`config`]: `Init` metadata;
//! - [`service`]: the Dapr RPCs, one module per operation family;
//! - [`status`]: errors in the exact shapes daprd decodes;
//! - [`metrics`]: the Prometheus endpoint (`--metrics-addr`);
//! - [`client`] and [`doctor`]: talking to a socket as daprd does; [`remote`]: the admin
//!   commands through a running server's socket;
//! - [`sidecar`]: `roost sidecar`, a stand-in for daprd's state API that calls components as
//!   daprd does.

#![deny(clippy::all)]

pub mod admin;
pub mod authority;
pub mod client;
pub mod config;
pub mod doctor;
pub mod instances;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod remote;
pub mod server;
pub mod service;
pub mod sidecar;
pub mod socket;
pub mod status;
