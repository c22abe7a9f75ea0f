//! `roost-component`: Roost served to Dapr as a pluggable state store.
//!
//! daprd discovers the component through a Unix socket (`<folder>/<name>.sock`, type
//! `state.<name>`), lists its services through gRPC reflection v1alpha, then calls `Init` and
//! `Features` for each component YAML that uses it, with the YAML's name in the
//! `x-component-instance` header, and afterwards the state operations. This crate implements
//! that contract (`docs/dapr.md`) on top of `roost-engine`:
//!
//! - [`server`]: `roost serve`: the socket, reflection, health, graceful shutdown;
//! - [`transport`]: HTTP/2 on the `h2` crate, the Dapr unary calls answered there;
//! - [`grpc`]: gRPC message framing and `grpc-timeout`;
//! - [`routes`]: where a call goes, by its path;
//! - [`socket`]: socket folder resolution, stale sockets, permissions;
//! - [`instances`]: one keyspace per component instance, persisted configuration;
//! - [`config`]: `Init` metadata;
//! - [`service`]: the Dapr RPCs, one module per operation family;
//! - [`status`]: errors in the exact shapes daprd decodes;
//! - [`metrics`]: the Prometheus endpoint (`--metrics-addr`);
//! - [`authority`]: the `:authority` fix in front of every socket connection;
//! - [`admin`]: the admin commands (offline and online, written once), their output, and the
//!   admin gRPC service on the socket;
//! - [`doctor`]: `roost doctor`, and [`doctor::client`], talking to a socket as daprd does;
//! - [`logging`] and [`proto`]: log set-up, the generated components and admin APIs.
//!
//! The daprd stand-in for apps (the app-facing state API) is its own crate, `roost-sidecar`.

#![deny(clippy::all)]

pub mod admin;
pub mod authority;
pub mod config;
pub mod doctor;
pub mod grpc;
pub mod http2;
pub mod instances;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod routes;
pub mod server;
pub mod service;
pub mod socket;
pub mod status;
pub mod transport;
