//! The one place where errors become gRPC statuses, in the shapes daprd decodes.
//!
//! - ETag mismatch → `FAILED_PRECONDITION`, ETag invalid → `INVALID_ARGUMENT`, each with
//!   exactly one `google.rpc.BadRequest` holding exactly one `FieldViolation{field: "etag"}`;
//!   daprd turns these into its ETag errors (HTTP 409 / 400).
//! - Other client mistakes → `INVALID_ARGUMENT` with a Dapr "kit error" `ErrorInfo`
//!   (`kit_error`, `http_code`, `tag`), so apps get a 400 instead of a 500.
//! - Everything else → a plain status (`INTERNAL`, `UNAVAILABLE`, ...), with no details.
//!
//! Engine errors go through [`from_engine`], the registry's typed errors through
//! [`from_instance`]; nothing else builds a status for an error.
//!
//! `tonic_types` builds the `google.rpc.Status` in `grpc-status-details-bin` with the same code
//! and message as the outer status, which is what daprd's grpc-go client requires.

use std::collections::HashMap;

use roost_engine::Error;
use tonic::{Code, Status};

use crate::instances::InstanceError;
use tonic_types::{BadRequest, ErrorDetail, ErrorInfo, StatusExt};

/// `ErrorInfo.domain` of Roost's kit errors.
pub const ERROR_DOMAIN: &str = "roost";

/// An ETag error in exactly the shape daprd decodes.
pub fn etag_status(code: Code, message: impl Into<String>) -> Status {
    let message = message.into();
    Status::with_error_details_vec(
        code,
        message.clone(),
        [ErrorDetail::BadRequest(BadRequest::with_violation(
            "etag", message,
        ))],
    )
}

/// A Dapr "kit error": daprd passes `code`, `http_code` and `tag` through to the app.
pub fn kit_status(code: Code, http_code: u16, tag: &str, message: impl Into<String>) -> Status {
    let metadata = HashMap::from([
        ("kit_error".to_string(), "true".to_string()),
        ("http_code".to_string(), http_code.to_string()),
        ("tag".to_string(), tag.to_string()),
    ]);
    Status::with_error_details_vec(
        code,
        message,
        [ErrorDetail::ErrorInfo(ErrorInfo::new(
            tag.trim_start_matches("ERR_"),
            ERROR_DOMAIN,
            metadata,
        ))],
    )
}

/// A client mistake other than an etag: HTTP 400 for the app.
pub fn bad_request(message: impl Into<String>) -> Status {
    kit_status(Code::InvalidArgument, 400, "ERR_ROOST_BAD_REQUEST", message)
}

/// Maps an instance error to the status daprd expects: the caller's mistakes (and a wrong
/// key given at `Init`) are 400 kit errors, an instance that needs `Init` is
/// `FAILED_PRECONDITION`, engine errors map as [`from_engine`] maps them.
pub fn from_instance(error: &InstanceError) -> Status {
    match error {
        InstanceError::Invalid(message) | InstanceError::Key(message) => {
            bad_request(message.clone())
        }
        InstanceError::NeedsInit(message) => Status::failed_precondition(message.clone()),
        InstanceError::Engine(error) => from_engine(error),
        InstanceError::Internal(message) => server_error(message),
    }
}

impl From<InstanceError> for Status {
    fn from(error: InstanceError) -> Status {
        from_instance(&error)
    }
}

/// A failure on the server's side that is not the engine's (a task that died, a temporary
/// file that could not be read): `INTERNAL`, with no details.
pub fn server_error(message: impl std::fmt::Display) -> Status {
    Status::internal(message.to_string())
}

/// Maps an engine error to the status daprd expects.
pub fn from_engine(error: &Error) -> Status {
    with_message(error, error.to_string())
}

/// The status `from_engine` gives `error`, carrying `message` instead of the error's own text
/// (e.g. with a count of failed bulk items in front).
pub fn with_message(error: &Error, message: String) -> Status {
    match error.root() {
        Error::EtagMismatch { .. } => etag_status(Code::FailedPrecondition, message),
        Error::InvalidEtag { .. } => etag_status(Code::InvalidArgument, message),
        Error::InvalidTtl { .. } | Error::InvalidArgument(_) | Error::InvalidQuery(_) => {
            bad_request(message)
        }
        Error::Integrity { .. } => Status::data_loss(message),
        Error::EncryptionKey(_) => Status::failed_precondition(message),
        Error::Closed => Status::unavailable(
            "the keyspace is closed (the component is shutting down or reinitialising it); retry",
        ),
        _ => Status::internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn decoded(status: &Status) -> tonic_types::pb::Status {
        tonic_types::pb::Status::decode(status.details()).unwrap()
    }

    #[test]
    fn etag_errors_carry_one_bad_request_with_one_etag_violation() {
        let status = etag_status(Code::FailedPrecondition, "mismatch");
        let inner = decoded(&status);
        assert_eq!(inner.code, Code::FailedPrecondition as i32);
        assert_eq!(inner.message, "mismatch");
        assert_eq!(inner.details.len(), 1);
        assert_eq!(
            inner.details[0].type_url,
            "type.googleapis.com/google.rpc.BadRequest"
        );
        let bad = tonic_types::pb::BadRequest::decode(inner.details[0].value.as_slice()).unwrap();
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "etag");
    }

    #[test]
    fn kit_errors_carry_one_error_info() {
        let status = bad_request("bad ttl");
        let inner = decoded(&status);
        assert_eq!(inner.code, Code::InvalidArgument as i32);
        assert_eq!(inner.details.len(), 1);
        assert_eq!(
            inner.details[0].type_url,
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        let info = tonic_types::pb::ErrorInfo::decode(inner.details[0].value.as_slice()).unwrap();
        assert_eq!(info.metadata["kit_error"], "true");
        assert_eq!(info.metadata["http_code"], "400");
        assert_eq!(info.metadata["tag"], "ERR_ROOST_BAD_REQUEST");
    }
}
