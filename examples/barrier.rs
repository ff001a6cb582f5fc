//! Workers in lock-step phases: nobody starts phase n+1 before everyone
//! finished phase n. One worker per phase is the leader and reports.
//!
//! Run: `cargo run --example barrier`.

mod common;

use std::time::Duration;

use quorate::Barrier;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::nodes(3).await?;
    let phase = Barrier::new(&nodes.quorum, "phases", 3);

    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let phase = phase.clone();
        workers.push(tokio::spawn(async move {
            for step in 0..3 {
                tokio::time::sleep(Duration::from_millis(20 * (worker + 1))).await;
                let done = phase.wait().await?;
                if done.is_leader() {
                    println!("phase {step} done (generation {})", done.generation());
                }
            }
            Ok::<(), quorate::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
