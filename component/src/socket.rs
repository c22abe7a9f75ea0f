//! The Unix socket daprd discovers: where it lives, stale files, permissions.
//!
//! daprd scans its socket folder once at startup and registers `<name>.sock` as
//! `state.<name>`. A stale socket file (nothing listening) can hang daprd's blocking dial, so
//! one is removed before binding — but only after checking that nothing answers on it; a live
//! server keeps its socket and this one refuses to start. The socket file is removed again on
//! shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// daprd's default socket folder.
pub const DEFAULT_SOCKET_FOLDER: &str = "/tmp/dapr-components-sockets";
/// Environment variables naming the socket folder, in the order they are read: daprd's,
/// the Kubernetes injector's, and the old singular spelling.
pub const SOCKET_FOLDER_ENV: [&str; 3] = [
    "DAPR_COMPONENTS_SOCKETS_FOLDER",
    "DAPR_COMPONENT_SOCKETS_FOLDER",
    "DAPR_COMPONENT_SOCKET_FOLDER",
];
/// The longest socket path Linux accepts (`sockaddr_un.sun_path` less its NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The socket folder: `explicit` if given, else the first set environment variable of
/// [`SOCKET_FOLDER_ENV`], else [`DEFAULT_SOCKET_FOLDER`].
pub fn socket_folder(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    SOCKET_FOLDER_ENV
        .iter()
        .filter_map(std::env::var_os)
        .find(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_FOLDER))
}

/// What is at a socket path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketState {
    Missing,
    /// A socket file that a server answers on.
    Live,
    /// A socket file nothing listens on.
    Stale,
    /// Something that is not a socket.
    NotASocket,
    /// The check itself failed (e.g. permission denied).
    Unknown(String),
}

pub fn inspect(path: &Path) -> SocketState {
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => SocketState::Missing,
        Err(err) => SocketState::Unknown(err.to_string()),
        Ok(meta) if !meta.file_type().is_socket() => SocketState::NotASocket,
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => SocketState::Live,
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => SocketState::Stale,
            Err(err) => SocketState::Unknown(err.to_string()),
        },
    }
}

/// Creates the folder, checks the path and removes a stale socket, so the path can be bound.
pub fn prepare(path: &Path) -> io::Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH_BYTES}: use a shorter --socket-folder or --name",
                path.display()
            ),
        ));
    }
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot create socket folder {}: {err}", folder.display()),
            )
        })?;
    }
    match inspect(path) {
        SocketState::Missing => Ok(()),
        SocketState::Stale => {
            tracing::info!(socket = %path.display(), "removing stale socket file (nothing listens on it)");
            std::fs::remove_file(path)
        }
        SocketState::Live => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another server is listening on {}; stop it first or choose another --name",
                path.display()
            ),
        )),
        SocketState::NotASocket => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        SocketState::Unknown(why) => Err(io::Error::other(format!(
            "cannot check {}: {why}",
            path.display()
        ))),
    }
}

/// Sets the socket file's permission bits (e.g. `0o660`).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Parses an octal mode such as `660` or `0o666`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{text:?} is not an octal permission mode like 660")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("7777").is_err());
    }

    #[test]
    fn stale_sockets_are_removed_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        {
            let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            assert_eq!(inspect(&path), SocketState::Live);
            assert!(prepare(&path).is_err());
        }
        assert_eq!(inspect(&path), SocketState::Stale);
        prepare(&path).unwrap();
        assert_eq!(inspect(&path), SocketState::Missing);
        std::fs::write(&path, "x").unwrap();
        assert_eq!(inspect(&path), SocketState::NotASocket);
        assert!(prepare(&path).is_err());
        assert!(path.exists());
        let long = dir.path().join("x".repeat(120));
        assert!(prepare(&long).is_err());
    }
}
