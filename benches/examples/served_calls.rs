//! The client side of `benches/callgrind.sh`: drives one server with the calls Dapr makes, in
//! three phases the script times from outside — preload and warm-up, then `ready` on stdout;
//! on a line on stdin, the measured calls, then `done`.
//!
//! ```text
//! served_calls roost SOCKET OP CALLS [CLIENTS KEYS]
//! served_calls redis HOST:PORT OP CALLS [CLIENTS KEYS]
//! ```
//!
//! OP is `get`, `set`, `txn` (10 sets) or `bulk-get` (100 keys). Roost's clients share one
//! HTTP/2 connection, as daprd's connection to a component does; Redis gets a connection per
//! client, as `state.redis`'s pool does. Values are 1 KiB of JSON.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use roost_bench::harness::targets::Client;
use roost_bench::harness::targets::redis::RedisClient;
use roost_bench::harness::targets::roost::{SocketClient, connect_and_init};

const VALUE_BYTES: usize = 1024;
const WARM_UP_CALLS: usize = 2000;

fn key(i: usize) -> String {
    format!("bench||key-{i:08}")
}

/// The key of call `n` (a fixed stride through the keyspace: the same keys every run).
fn key_of_call(n: usize, keys: usize) -> usize {
    n.wrapping_mul(7919) % keys
}

async fn call(client: &dyn Client, op: &str, n: usize, keys: usize) {
    let k = key_of_call(n, keys);
    let result = match op {
        "get" => client.get(&key(k)).await.map(drop),
        "set" => {
            let value = roost_bench::json_value(n as u64, VALUE_BYTES);
            client.set(&key(k), &value, None, false).await
        }
        "txn" => {
            let items: Vec<(String, Vec<u8>)> = (0..10)
                .map(|j| {
                    (
                        key(key_of_call(n * 10 + j, keys)),
                        roost_bench::json_value((n * 10 + j) as u64, VALUE_BYTES),
                    )
                })
                .collect();
            client.transact(&items).await
        }
        "bulk-get" => {
            let ids: Vec<String> = (0..100)
                .map(|j| key(key_of_call(n * 100 + j, keys)))
                .collect();
            client.bulk_get(&ids).await.map(drop)
        }
        other => panic!("unknown op {other:?} (get, set, txn, bulk-get)"),
    };
    if let Err(err) = result {
        panic!("{op} failed: {err:?}");
    }
}

/// `calls` calls spread over the clients, each client one call at a time.
async fn run(clients: &[Arc<dyn Client>], op: &str, calls: usize, keys: usize, base: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in clients {
        let (client, next, op) = (Arc::clone(client), Arc::clone(&next), op.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= calls {
                    break;
                }
                call(&*client, &op, base + n, keys).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, address, op, calls, rest @ ..] = args.as_slice() else {
        eprintln!("usage: served_calls roost|redis ADDRESS OP CALLS [CLIENTS KEYS]");
        std::process::exit(2);
    };
    let calls: usize = calls.parse().expect("CALLS");
    let clients_n: usize = rest.first().map_or(16, |c| c.parse().expect("CLIENTS"));
    let keys: usize = rest.get(1).map_or(10_000, |k| k.parse().expect("KEYS"));
    let clients: Vec<Arc<dyn Client>> = match target.as_str() {
        "roost" => {
            let channel = connect_and_init(std::path::Path::new(address), "bench", &[])
                .await
                .expect("connect to roost");
            (0..clients_n)
                .map(|_| Arc::new(SocketClient::new(channel.clone(), "bench")) as Arc<dyn Client>)
                .collect()
        }
        "redis" => {
            let addr = address.parse().expect("HOST:PORT");
            let mut clients: Vec<Arc<dyn Client>> = Vec::new();
            for _ in 0..clients_n {
                clients.push(Arc::new(
                    RedisClient::connect(addr).await.expect("connect to redis"),
                ));
            }
            clients
        }
        other => panic!("unknown target {other:?} (roost, redis)"),
    };
    let items: Vec<(String, Vec<u8>)> = (0..keys)
        .map(|i| (key(i), roost_bench::json_value(i as u64, VALUE_BYTES)))
        .collect();
    clients[0].load(&items).await.expect("preload");
    run(&clients, op, WARM_UP_CALLS, keys, 0).await;
    println!("ready");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    run(&clients, op, calls, keys, WARM_UP_CALLS).await;
    println!("done");
}
