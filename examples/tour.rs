//! A tour of quorate: a lock, contention, a fencing token, a lost lease, the
//! other primitives, and a node going down.
//!
//! Run: `cargo run --example tour`. It starts 3 throwaway local
//! redis-servers, or uses the nodes in `QUORATE_NODES` (comma-separated URLs;
//! the node-failure part then is skipped, since it kills a node).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::{Barrier, Error, Latch, Mutex, Quorum, ReentrantLock, Semaphore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = common::nodes(3).await?;
    let q = nodes.quorum.clone();
    println!(
        "quorum of {} node(s), majority {}\n",
        q.node_count(),
        q.majority()
    );

    lock_and_fence(&q).await?;
    contention(&q).await?;
    lost_lease(&q).await?;
    other_primitives(&q).await?;
    match nodes.local.as_mut() {
        Some(servers) if servers.len() >= 3 => node_failure(&q, servers).await?,
        _ => println!("(skipping the node failure part: these nodes are not ours to kill)"),
    }
    Ok(())
}

async fn lock_and_fence(q: &Quorum) -> quorate::Result<()> {
    println!("1. a lock and its fencing token");
    let orders = Mutex::new(q, "tour:orders");
    let started = Instant::now();
    let first = orders.lock().await?;
    println!(
        "   locked in {:?}, token {}, valid for {:?}",
        started.elapsed(),
        first.fencing_token().await?,
        first.remaining()
    );
    println!(
        "   a second try_lock while held: {:?}",
        orders.try_lock().await?.map(|g| g.name().to_owned())
    );
    let token = first.fencing_token().await?;
    first.release().await?;
    let second = orders.lock().await?;
    println!(
        "   next holder's token {} > {}: writes from the old holder can be refused\n",
        second.fencing_token().await?,
        token
    );
    second.release().await
}

async fn contention(q: &Quorum) -> quorate::Result<()> {
    println!("2. 8 tasks x 25 critical sections on one lock");
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let lock = Mutex::new(q, "tour:counter");
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let guard = lock.lock().await?;
                // A read-modify-write that would lose updates without the lock.
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(seen + 1, Ordering::SeqCst);
                guard.release().await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await.expect("task panicked")?;
    }
    let elapsed = started.elapsed();
    println!(
        "   counter = {} (exact), {:?} per handoff\n",
        counter.load(Ordering::SeqCst),
        elapsed / 200
    );
    Ok(())
}

async fn lost_lease(q: &Quorum) -> quorate::Result<()> {
    println!("3. lost(): a lease that nobody renews ends, and says so");
    let short = Mutex::new(q, "tour:short")
        .with_ttl(Duration::from_millis(300))
        .auto_extend(false);
    let guard = short.lock().await?;
    let started = Instant::now();
    tokio::select! {
        () = guard.lost() => println!("   lease lost after {:?}; the work was abandoned", started.elapsed()),
        () = tokio::time::sleep(Duration::from_secs(5)) => println!("   the work finished first"),
    }
    println!(
        "   releasing it now: {:?}\n",
        guard.release().await.err().map(|e| e.to_string())
    );
    Ok(())
}

async fn other_primitives(q: &Quorum) -> quorate::Result<()> {
    println!("4. the other primitives");
    let exports = Semaphore::new(q, "tour:exports", 2);
    let a = exports.acquire().await?;
    let b = exports.acquire().await?;
    println!(
        "   semaphore of 2: slots {:?} and {:?} held, a third try: {:?}",
        a.slots(),
        b.slots(),
        exports.try_acquire().await?.map(|p| p.slots())
    );
    a.release().await?;
    b.release().await?;

    let boot = Latch::new(q, "tour:boot", 2);
    boot.count_down_as("shard-1").await?;
    boot.count_down_as("shard-1").await?;
    println!(
        "   latch of 2 after shard-1 twice: {} to go",
        boot.count().await?
    );
    boot.count_down_as("shard-2").await?;
    boot.wait().await?;
    println!("   latch open after shard-2");

    let phase = Barrier::new(q, "tour:phase", 3);
    let waits: Vec<_> = (0..3)
        .map(|_| {
            let phase = phase.clone();
            tokio::spawn(async move { phase.wait().await })
        })
        .collect();
    let mut leaders = 0;
    for w in waits {
        leaders += u32::from(w.await.expect("task panicked")?.is_leader());
    }
    println!("   barrier of 3 released together, leaders: {leaders}");

    let ledger = ReentrantLock::new(q, "tour:ledger", "job-17");
    let outer = ledger.lock().await?;
    let inner = ledger.lock().await?;
    println!(
        "   reentrant lock held {} times by job-17, one token: {}\n",
        ledger.hold_count().await?,
        outer.fencing_token().await? == inner.fencing_token().await?
    );
    inner.release().await?;
    outer.release().await
}

async fn node_failure(
    q: &Quorum,
    servers: &mut quorate::testkit::ServerGroup,
) -> quorate::Result<()> {
    println!("5. a node goes down");
    let lock = Mutex::new(q, "tour:failover");
    let held = lock.lock().await?;
    servers[0].kill();
    println!(
        "   killed {}; the lease is still valid: {}",
        servers[0].url(),
        held.is_valid()
    );
    held.release().await?;
    let again = lock.lock().await?;
    println!(
        "   with 2 of 3 nodes the lock still works (token {})",
        again.fencing_token().await?
    );
    again.release().await?;
    servers[1].kill();
    match lock.lock_timeout(Duration::from_millis(300)).await {
        Err(e @ Error::Quorum(_)) => println!("   with 1 of 3: {e}"),
        other => println!("   with 1 of 3: unexpected {other:?}"),
    }
    Ok(())
}
