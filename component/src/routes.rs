//! Where a call on the socket goes, by its path `/<package.Service>/<Method>`:
//!
//! - the unary methods of the Dapr services ([`Unary`]) are answered by the transport itself
//!   (`crate::transport`, `crate::service::answer`): these are the calls daprd makes;
//! - every other call goes to a tonic-generated service of that name ([`Services`]): Roost's
//!   admin service, reflection (v1alpha and v1) and health, streaming calls among them;
//! - an unknown service is answered `UNIMPLEMENTED`, as gRPC servers do.
//!
//! Doing this here keeps axum (tonic's router) out of the build and costs one string
//! comparison per service instead of a URL router per call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::body::Body;
use tonic::server::NamedService;

pub type Call = http::Request<Body>;
pub type Answer = http::Response<Body>;
/// The future every tonic-generated service returns (`tonic::codegen::BoxFuture`).
pub type Answering = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send + 'static>>;

/// A service called through a shared reference: a clone of it (for tonic's generated servers,
/// an `Arc` increment) takes the call, so no call allocates beyond the future tonic makes.
trait Handler: Send + Sync {
    fn handle(&self, call: Call) -> Answering;
}

struct Served<S>(S);

impl<S> Handler for Served<S>
where
    S: tower::Service<Call, Response = Answer, Error = Infallible, Future = Answering>
        + Clone
        + Send
        + Sync,
{
    fn handle(&self, call: Call) -> Answering {
        self.0.clone().call(call)
    }
}

/// The services served on the socket, each under its gRPC name.
#[derive(Clone, Default)]
pub struct Services {
    by_name: Arc<Vec<(&'static str, Box<dyn Handler>)>>,
}

impl Services {
    /// Answers a call to one of the services (or `UNIMPLEMENTED`).
    pub fn handle(&self, call: Call) -> Answering {
        let name = service_name(call.uri().path());
        match self.by_name.iter().find(|(known, _)| *known == name) {
            Some((_, service)) => service.handle(call),
            None => {
                let (parts, ()) = tonic::Status::unimplemented(format!("unknown service {name}"))
                    .into_http::<()>()
                    .into_parts();
                Box::pin(std::future::ready(Ok(http::Response::from_parts(
                    parts,
                    Body::empty(),
                ))))
            }
        }
    }

    /// Adds `service`, under its gRPC name.
    pub fn serve<S>(mut self, service: S) -> Services
    where
        S: tower::Service<Call, Response = Answer, Error = Infallible, Future = Answering>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
    {
        Arc::get_mut(&mut self.by_name)
            .expect("services are added before serving")
            .push((S::NAME, Box::new(Served(service))));
        self
    }
}

/// The service part of a gRPC path: `/a.b.Service/Method` → `a.b.Service`.
fn service_name(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split_once('/').map_or(rest, |(service, _)| service)
}

/// The unary methods of the Dapr services that the transport answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Init,
    Features,
    Ping,
    Get,
    Set,
    Delete,
    BulkGet,
    BulkSet,
    BulkDelete,
    Transact,
    MultiMaxSize,
    Query,
}

impl Unary {
    /// How many methods there are (`method as usize` is below it).
    pub const COUNT: usize = Unary::Query as usize + 1;
}

const STATE_STORE: &str = "/dapr.proto.components.v1.StateStore/";

/// The Dapr unary method at `path`, if it is one.
pub fn unary(path: &str) -> Option<Unary> {
    if let Some(method) = path.strip_prefix(STATE_STORE) {
        return Some(match method {
            "Get" => Unary::Get,
            "Set" => Unary::Set,
            "Delete" => Unary::Delete,
            "BulkGet" => Unary::BulkGet,
            "BulkSet" => Unary::BulkSet,
            "BulkDelete" => Unary::BulkDelete,
            "Init" => Unary::Init,
            "Features" => Unary::Features,
            "Ping" => Unary::Ping,
            _ => return None,
        });
    }
    match path {
        "/dapr.proto.components.v1.TransactionalStateStore/Transact" => Some(Unary::Transact),
        "/dapr.proto.components.v1.TransactionalStoreMultiMaxSize/MultiMaxSize" => {
            Some(Unary::MultiMaxSize)
        }
        "/dapr.proto.components.v1.QueriableStateStore/Query" => Some(Unary::Query),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Unary, service_name, unary};

    #[test]
    fn dapr_methods_are_unary_and_the_rest_is_not() {
        assert_eq!(
            unary("/dapr.proto.components.v1.StateStore/Get"),
            Some(Unary::Get)
        );
        assert_eq!(
            unary("/dapr.proto.components.v1.TransactionalStateStore/Transact"),
            Some(Unary::Transact)
        );
        assert_eq!(
            unary("/dapr.proto.components.v1.QueriableStateStore/Query"),
            Some(Unary::Query)
        );
        assert_eq!(unary("/dapr.proto.components.v1.StateStore/Nope"), None);
        assert_eq!(unary("/roost.admin.v1.Admin/Get"), None);
        assert_eq!(unary("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn the_service_is_the_first_path_segment() {
        assert_eq!(
            service_name("/dapr.proto.components.v1.StateStore/Get"),
            "dapr.proto.components.v1.StateStore"
        );
        assert_eq!(
            service_name("/grpc.health.v1.Health"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_name("/"), "");
    }
}
