//! A service that starts once 3 shards report ready.
//!
//! Each shard counts down under its own name, so a shard that restarts and
//! reports again still counts once.
//!
//! Run: `cargo run --example latch`.

mod common;

use std::time::Duration;

use quorate::Latch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::nodes(3).await?;
    let ready = Latch::new(&nodes.quorum, "shards-ready", 3);

    let service = {
        let ready = ready.clone();
        tokio::spawn(async move {
            ready.wait().await?;
            println!("all shards ready: service starts");
            Ok::<(), quorate::Error>(())
        })
    };
    for shard in ["shard-a", "shard-b", "shard-b", "shard-c"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready.count_down_as(shard).await?;
        println!("{shard} reported ready; {} to go", ready.count().await?);
    }
    service.await??;
    Ok(())
}
