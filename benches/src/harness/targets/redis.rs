//! Redis as Dapr's `state.redis` in hash mode: each key a hash of `data` and `version`, the set
//! and delete logic in Lua sent with EVAL (the whole script every time, as the component does),
//! HGETALL for get, MULTI / EVAL… / EXEC in one pipelined round trip for transactions.
//!
//! The RESP client is a minimal one over one TCP connection per worker; bulk get pipelines its
//! HGETALLs on that connection (the component issues them in parallel over its pool).

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use super::{Client, Fut, Item, OpError};

/// The set logic of the Dapr component's hash mode (§5.4): write when the key has no version,
/// when the stored version equals the given etag, or when no etag was given ("0") and the key
/// has no first-write marker; mark first-write writes; bump the version and return it.
const SET_SCRIPT: &str = r#"local version = redis.pcall("HGET", KEYS[1], "version")
if type(version) == "table" then
  redis.call("DEL", KEYS[1])
  version = false
end
local marker = redis.pcall("HGET", KEYS[1], "first-write")
if not version or version == ARGV[1] or (ARGV[1] == "0" and not marker) then
  redis.call("HSET", KEYS[1], "data", ARGV[2])
  if ARGV[3] == "0" then
    redis.call("HSET", KEYS[1], "first-write", 0)
  end
  return redis.call("HINCRBY", KEYS[1], "version", 1)
end
return redis.error_reply("failed to set key " .. KEYS[1])"#;

/// A RESP reply.
#[derive(Debug)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    out: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Connection {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer: write,
            out: Vec::with_capacity(8 * 1024),
        })
    }

    /// Queues one command (sent by `flush`).
    fn push(&mut self, args: &[&[u8]]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "redis closed the connection",
            ));
        }
        line.truncate(line.trim_end_matches(['\r', '\n']).len());
        Ok(line)
    }

    fn read(&mut self) -> Fut<'_, Reply> {
        Box::pin(async move {
            let line = self.line().await.map_err(OpError::failed)?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            let number = || -> Result<i64, OpError> {
                rest.parse()
                    .map_err(|_| OpError::Failed(format!("bad RESP line {line:?}")))
            };
            Ok(match kind {
                "+" => Reply::Simple(rest.to_string()),
                "-" => Reply::Error(rest.to_string()),
                ":" => Reply::Int(number()?),
                "$" => {
                    let len = number()?;
                    if len < 0 {
                        Reply::Bulk(None)
                    } else {
                        let mut data = vec![0u8; len as usize + 2];
                        self.reader
                            .read_exact(&mut data)
                            .await
                            .map_err(OpError::failed)?;
                        data.truncate(len as usize);
                        Reply::Bulk(Some(data))
                    }
                }
                "*" => {
                    let len = number()?;
                    if len < 0 {
                        Reply::Array(None)
                    } else {
                        let mut items = Vec::with_capacity(len as usize);
                        for _ in 0..len {
                            items.push(self.read().await?);
                        }
                        Reply::Array(Some(items))
                    }
                }
                _ => return Err(OpError::Failed(format!("bad RESP line {line:?}"))),
            })
        })
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, OpError> {
        self.push(args);
        self.flush().await.map_err(OpError::failed)?;
        self.read().await
    }
}

/// One worker's connection to one Redis server.
pub struct RedisClient {
    connection: Mutex<Connection>,
}

impl RedisClient {
    pub async fn connect(addr: SocketAddr) -> Result<RedisClient, OpError> {
        let mut connection = Connection::open(addr).await.map_err(OpError::failed)?;
        match connection.call(&[b"PING"]).await? {
            Reply::Simple(pong) if pong == "PONG" => {}
            other => return Err(OpError::Failed(format!("PING answered {other:?}"))),
        }
        Ok(RedisClient {
            connection: Mutex::new(connection),
        })
    }
}

/// `data` and `version` from an HGETALL reply, as the component reads them.
fn hash_item(reply: Reply) -> Result<Option<Item>, OpError> {
    let fields = match reply {
        Reply::Array(Some(fields)) => fields,
        Reply::Array(None) => return Ok(None),
        Reply::Error(e) => return Err(OpError::Failed(e)),
        other => return Err(OpError::Failed(format!("HGETALL answered {other:?}"))),
    };
    if fields.is_empty() {
        return Ok(None);
    }
    let (mut data, mut version) = (None, None);
    let mut it = fields.into_iter();
    while let (Some(Reply::Bulk(Some(name))), Some(Reply::Bulk(Some(value)))) =
        (it.next(), it.next())
    {
        match name.as_slice() {
            b"data" => data = Some(value),
            b"version" => version = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
    }
    match (data, version) {
        (Some(data), Some(version)) => Ok(Some((data, version))),
        _ => Err(OpError::Failed(
            "required hash field 'data' or 'version' was not found".into(),
        )),
    }
}

fn set_args<'a>(key: &'a str, value: &'a [u8], version: &'a str, fw: &'a str) -> [&'a [u8]; 7] {
    [
        b"EVAL",
        SET_SCRIPT.as_bytes(),
        b"1",
        key.as_bytes(),
        version.as_bytes(),
        value,
        fw.as_bytes(),
    ]
}

impl Client for RedisClient {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            let mut c = self.connection.lock().await;
            match c.call(&[b"PING"]).await? {
                Reply::Simple(_) => Ok(()),
                other => Err(OpError::Failed(format!("PING answered {other:?}"))),
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>> {
        Box::pin(async move {
            let mut c = self.connection.lock().await;
            hash_item(c.call(&[b"HGETALL", key.as_bytes()]).await?)
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            // A non-numeric etag fails before the script (ETagError invalid).
            if let Some(etag) = etag
                && etag.parse::<u64>().is_err()
            {
                return Err(OpError::Conflict);
            }
            let version = etag.unwrap_or("0");
            let fw = if first_write { "0" } else { "1" };
            let mut c = self.connection.lock().await;
            match c.call(&set_args(key, value, version, fw)).await? {
                Reply::Int(version) if version > 0 => Ok(()),
                Reply::Error(e) if e.contains("failed to set key") => Err(OpError::Conflict),
                other => Err(OpError::Failed(format!("EVAL answered {other:?}"))),
            }
        })
    }

    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize> {
        Box::pin(async move {
            let mut c = self.connection.lock().await;
            for key in keys {
                c.push(&[b"HGETALL", key.as_bytes()]);
            }
            c.flush().await.map_err(OpError::failed)?;
            let mut found = 0;
            for _ in keys {
                if hash_item(c.read().await?)?.is_some() {
                    found += 1;
                }
            }
            Ok(found)
        })
    }

    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut c = self.connection.lock().await;
            c.push(&[b"MULTI"]);
            for (key, value) in items {
                // Inside Multi the component calls Set without the first-write argument.
                c.push(&set_args(key, value, "0", "1"));
            }
            c.push(&[b"EXEC"]);
            c.flush().await.map_err(OpError::failed)?;
            for _ in 0..=items.len() {
                if let Reply::Error(e) = c.read().await? {
                    return Err(OpError::Failed(e));
                }
            }
            match c.read().await? {
                Reply::Array(Some(replies)) => {
                    // EXEC reports the first error; the other commands still applied.
                    for reply in replies {
                        if let Reply::Error(e) = reply {
                            return Err(OpError::Failed(e));
                        }
                    }
                    Ok(())
                }
                other => Err(OpError::Failed(format!("EXEC answered {other:?}"))),
            }
        })
    }

    fn query_eq<'a>(&'a self, _: &'a str, _: bool) -> Fut<'a, usize> {
        Box::pin(async {
            Err(OpError::Failed(
                "redis-server has no query support (needs RedisJSON and RediSearch)".into(),
            ))
        })
    }

    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut c = self.connection.lock().await;
            for chunk in items.chunks(1000) {
                for (key, value) in chunk {
                    c.push(&[b"HSET", key.as_bytes(), b"data", value, b"version", b"1"]);
                }
                c.flush().await.map_err(OpError::failed)?;
                for _ in chunk {
                    if let Reply::Error(e) = c.read().await? {
                        return Err(OpError::Failed(e));
                    }
                }
            }
            Ok(())
        })
    }

    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        self.load(items)
    }
}
