//! The socket's services by name: a call `/<package.Service>/<Method>` goes to the service of
//! that name, an unknown service is answered `UNIMPLEMENTED`, as gRPC servers do. This is what
//! tonic's router (built on axum) did for `roost serve`; doing it here keeps axum out of its
//! build and costs one string comparison per service instead of a URL router per call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;

type Call = http::Request<Body>;
type Answer = http::Response<Body>;
/// The future every tonic-generated service returns (`tonic::codegen::BoxFuture`).
type Answering = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send + 'static>>;

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

impl tower::Service<Call> for Services {
    type Response = Answer;
    type Error = Infallible;
    type Future = Answering;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Generated tonic services are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
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
}

#[cfg(test)]
mod tests {
    use super::service_name;

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
