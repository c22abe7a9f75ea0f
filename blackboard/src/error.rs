//! Errors of the blackboard client.

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A payload that does not satisfy its type's constraints, or is not of the expected type.
    #[error("invalid {type_name} payload: {why}")]
    Invalid { type_name: String, why: String },
    /// A stored value that cannot be read as what it should be.
    #[error("corrupt blackboard data: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
    /// A conflicting concurrent write that retries did not resolve.
    #[error("conflicting write to {key} after {attempts} attempts")]
    Conflict { key: String, attempts: u32 },
    /// An agent declaration that cannot work (duplicate name, no handler...).
    #[error("agent {agent}: {why}")]
    Agent { agent: String, why: String },
}

impl From<roost_engine::Error> for Error {
    fn from(err: roost_engine::Error) -> Error {
        Error::Store(err.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
