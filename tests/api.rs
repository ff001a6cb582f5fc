//! Compile-time checks of the public API's auto traits: handles and guards
//! move across tasks, futures can be spawned, errors box.

use std::future::Future;

use quorate::{
    Barrier, BarrierWaitResult, Config, Error, Latch, Lease, Mutex, MutexGuard, Quorum,
    ReentrantGuard, ReentrantLock, Semaphore, SemaphorePermit, Tally,
};

fn send_sync_static<T: Send + Sync + 'static>() {}
fn spawnable<F: Future + Send + 'static>(_: F) {}
fn error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn handles_and_guards_are_send_sync_and_static() {
    send_sync_static::<Quorum>();
    send_sync_static::<Config>();
    send_sync_static::<Mutex>();
    send_sync_static::<MutexGuard>();
    send_sync_static::<Semaphore>();
    send_sync_static::<SemaphorePermit>();
    send_sync_static::<ReentrantLock>();
    send_sync_static::<ReentrantGuard>();
    send_sync_static::<Latch>();
    send_sync_static::<Barrier>();
    send_sync_static::<BarrierWaitResult>();
    send_sync_static::<Tally>();
    send_sync_static::<Lease>();
}

/// Code that only needs a lease takes `&Lease`, and works with every guard.
#[allow(dead_code)]
async fn token_of(lease: &Lease) -> quorate::Result<u64> {
    lease.fencing_token().await
}

#[allow(dead_code)]
async fn every_guard_is_a_lease(
    m: &MutexGuard,
    s: &SemaphorePermit,
    r: &ReentrantGuard,
) -> quorate::Result<u64> {
    Ok(token_of(m).await? + token_of(s).await? + token_of(r).await?)
}

#[allow(dead_code)]
async fn guards_convert_into_their_lease(guard: MutexGuard) -> quorate::Result<()> {
    let lease: Lease = guard.into();
    lease.release().await
}

#[test]
fn error_is_a_boxable_std_error() {
    error::<Error>();
}

#[allow(dead_code, clippy::let_underscore_future)]
fn futures_can_be_spawned(q: Quorum, guard: MutexGuard, permit: SemaphorePermit) {
    let m = Mutex::new(&q, "m");
    let s = Semaphore::new(&q, "s", 2);
    let l = Latch::new(&q, "l", 2);
    let b = Barrier::new(&q, "b", 2);
    let r = ReentrantLock::new(&q, "r", "me");
    spawnable(async move { m.lock().await });
    spawnable(async move { s.acquire_many(2).await });
    spawnable(async move { l.wait().await });
    spawnable(async move { b.wait().await });
    spawnable(async move { r.lock().await });
    spawnable(guard.lost());
    spawnable(async move { guard.release().await });
    spawnable(async move { permit.extend(std::time::Duration::from_secs(1)).await });
    spawnable(Quorum::connect(["redis://127.0.0.1:1"]));
    let m = Mutex::new(&q, "m");
    spawnable(async move { m.run(async |g| g.fencing_token().await).await });
}
