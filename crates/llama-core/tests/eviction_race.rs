//! Readers and an evictor on one store at once: a blob found present is never gone when it
//! is read. Threads stand in for processes: flock locks belong to open file descriptions, so
//! two threads' locks conflict exactly as two processes' do.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use llama_core::{Digest, Store};

const BLOBS: usize = 1000;
// Rounds go on until the race has gone both ways (some blobs read, some found evicted): on a
// loaded machine the readers can finish a round before the evictor's first pass lands.
const MIN_ROUNDS: usize = 2;
const MAX_ROUNDS: usize = 40;
const READERS: usize = 4;

// See: issue 12, defect 6
#[test]
fn r12_a_blob_found_present_is_never_evicted_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A limit far below what is stored: every eviction wants to remove everything old.
    let store = Store::open(dir.path().join("store"), 4096).expect("open store");
    // Another handle on the same store, unbounded, lays out each round without evicting.
    let filler = Store::open(dir.path().join("store"), u64::MAX).expect("open store");
    let started = Instant::now();
    let (mut read, mut gone) = (0u64, 0u64);
    let mut rounds = 0;
    while rounds < MIN_ROUNDS || ((gone == 0 || read == 0) && rounds < MAX_ROUNDS) {
        let round = rounds;
        rounds += 1;
        let blobs: Vec<Digest> = (0..BLOBS)
            .map(|i| {
                filler
                    .put_bytes(format!("round {round} blob {i}").as_bytes())
                    .expect("put")
            })
            .collect();
        // As if the last build was an hour ago: every blob is fair game for eviction.
        let old = SystemTime::now() - Duration::from_secs(3600);
        for d in &blobs {
            File::open(store.blob_path(d))
                .and_then(|f| f.set_modified(old))
                .expect("age blob");
        }
        let blobs = Arc::new(blobs);
        let done = Arc::new(AtomicBool::new(false));
        let evictor = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    store.evict().expect("evict");
                }
            })
        };
        let reads = Arc::new(AtomicU64::new(0));
        let misses = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (store, blobs) = (store.clone(), blobs.clone());
                let (reads, misses) = (reads.clone(), misses.clone());
                std::thread::spawn(move || {
                    // Each reader walks the blobs in its own order.
                    for k in 0..BLOBS {
                        let d = &blobs[(k * (2 * r + 1) + r * 97) % BLOBS];
                        if store.contains(d) {
                            if let Err(e) = store.get_bytes(d) {
                                return Err(format!("{d} was present, then: {e}"));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        } else {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let failures: Vec<String> = readers
            .into_iter()
            .filter_map(|r| r.join().expect("reader").err())
            .collect();
        done.store(true, Ordering::Relaxed);
        evictor.join().expect("evictor");
        assert!(failures.is_empty(), "round {round}: {failures:?}");
        read += reads.load(Ordering::Relaxed);
        gone += misses.load(Ordering::Relaxed);
    }
    eprintln!(
        "eviction race: {rounds} rounds of {BLOBS} aged blobs, {READERS} readers and an evictor: {read} reads, {gone} found evicted, in {:?}",
        started.elapsed()
    );
    assert!(
        gone > 0 && read > 0,
        "in {rounds} rounds the race never went both ways ({read} reads, {gone} evicted): the test raced nothing"
    );
}
