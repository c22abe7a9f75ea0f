//! A plain Dapr app: it uses the official Rust SDK (`dapr` crate) and the Dapr state API of the
//! `statestore` component, knowing nothing about Roost. Run it unchanged under real daprd or
//! under `roost-sidecar` — both give it `DAPR_GRPC_PORT`:
//!
//! ```sh
//! cargo run --release --bin roost -- serve &
//! cargo run --release -p roost-sidecar -- --app-id orders --resources-path components &
//! DAPR_GRPC_PORT=50001 cargo run --release -p roost-component --example orders
//! # or, with the Dapr CLI:
//! dapr run --app-id orders --resources-path components -- \
//!     cargo run --release -p roost-component --example orders
//! ```

use std::collections::HashMap;

use dapr::dapr::proto::common::v1::Etag;

const STORE: &str = "statestore";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut client = dapr::Client::new().await?;

    client
        .save_state(
            STORE,
            "order-1",
            br#"{"item":"book","qty":1}"#.to_vec(),
            None,
            None,
            None,
        )
        .await?;
    let order = client.get_state(STORE, "order-1", None).await?;
    println!(
        "order-1 = {} (etag {})",
        String::from_utf8_lossy(&order.data),
        order.etag
    );

    // Optimistic concurrency: write only if nobody changed it since we read it.
    client
        .save_state(
            STORE,
            "order-1",
            br#"{"item":"book","qty":2}"#.to_vec(),
            Some(Etag {
                value: order.etag.clone(),
            }),
            None,
            None,
        )
        .await?;
    let stale = client
        .save_state(
            STORE,
            "order-1",
            br#"{"item":"book","qty":3}"#.to_vec(),
            Some(Etag { value: order.etag }),
            None,
            None,
        )
        .await;
    println!("write with the old etag refused: {}", stale.is_err());

    // A cache entry that expires after a minute.
    let ttl = HashMap::from([("ttlInSeconds".to_string(), "60".to_string())]);
    client
        .save_state(
            STORE,
            "session-1",
            b"\"abc\"".to_vec(),
            None,
            Some(ttl),
            None,
        )
        .await?;

    let found = client
        .query_state_alpha1(
            STORE,
            serde_json::json!({"filter": {"EQ": {"item": "book"}}}),
            None,
        )
        .await?;
    for row in found.results {
        println!(
            "query: {} = {}",
            row.key,
            String::from_utf8_lossy(&row.data)
        );
    }

    let metadata = client.get_metadata().await?;
    for component in metadata.registered_components {
        println!(
            "component {} ({}) capabilities {:?}",
            component.name, component.r#type, component.capabilities
        );
    }
    client.delete_state(STORE, "order-1", None).await?;
    Ok(())
}
