use super::*;

fn store(limit: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), limit).unwrap();
    (dir, store)
}

#[test]
fn put_then_get_round_trips() {
    let (_d, s) = store(1 << 30);
    let d = s.put_bytes(b"hello\n").unwrap();
    assert_eq!(d, Digest::of_bytes(b"hello\n"));
    assert_eq!(s.get_bytes(&d).unwrap(), b"hello\n");
    // Storing again is a no-op that still succeeds.
    assert_eq!(s.put_bytes(b"hello\n").unwrap(), d);
    assert_eq!(s.accounted_size().unwrap(), 6);
}

#[test]
fn corrupt_blob_is_removed_not_served() {
    let (_d, s) = store(1 << 30);
    let d = s.put_bytes(b"precious bytes").unwrap();
    let path = s.blob_path(&d);
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut data = fs::read(&path).unwrap();
    data[3] ^= 0x01;
    fs::write(&path, data).unwrap();
    match s.get_bytes(&d) {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!s.contains(&d), "the corrupt blob must be gone");
    assert!(matches!(s.get_bytes(&d), Err(StoreError::Missing { .. })));
}

#[test]
fn put_file_detects_a_changed_source() {
    let (dir, s) = store(1 << 30);
    let src = dir.path().join("src");
    fs::write(&src, b"one").unwrap();
    let stale = Digest::of_bytes(b"two");
    assert!(matches!(
        s.put_file(&src, Some(stale)),
        Err(StoreError::Changed { .. })
    ));
    assert!(!s.contains(&stale));
    assert_eq!(s.put_file(&src, None).unwrap(), Digest::of_bytes(b"one"));
}

#[test]
fn damaged_action_result_is_a_miss() {
    let (_d, s) = store(1 << 30);
    let action = Digest::of_bytes(b"action");
    let result = reapi::ActionResult {
        exit_code: 0,
        stdout_digest: Some(Digest::of_bytes(b"out").to_proto()),
        ..Default::default()
    };
    s.put_action_result(&action, &result).unwrap();
    assert_eq!(s.get_action_result(&action).unwrap(), Some(result));
    let path = s.record_path(RecordKind::ActionResult, &action);
    let mut data = fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&path, data).unwrap();
    assert_eq!(s.get_action_result(&action).unwrap(), None);
    assert!(!path.exists());
}

fn age(s: &Store, d: &Digest, secs: u64) {
    File::open(s.blob_path(d))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn eviction_keeps_the_store_under_its_limit_and_drops_the_oldest() {
    let (_d, s) = store(10_000);
    let old = s.put_bytes(&[1u8; 3000]).unwrap();
    let mid = s.put_bytes(&[2u8; 3000]).unwrap();
    let new = s.put_bytes(&[3u8; 3000]).unwrap();
    assert!(s.contains(&old) && s.contains(&mid) && s.contains(&new));
    // All three last used before the grace period, the oldest longest ago.
    age(&s, &old, 7200);
    age(&s, &mid, 3600);
    age(&s, &new, 1800);
    // This one passes the limit and triggers eviction of the least recently used.
    let newest = s.put_bytes(&[4u8; 3000]).unwrap();
    assert!(
        !s.blob_path(&old).exists(),
        "least recently used goes first"
    );
    assert!(!s.blob_path(&mid).exists());
    assert!(s.contains(&new) && s.contains(&newest));
    assert!(s.accounted_size().unwrap() <= 8_000);
}

// See: issue 12, defect 4
#[test]
fn r12_a_hostile_size_is_an_error_not_an_allocation() {
    let (_d, s) = store(1 << 30);
    let tree = reapi::Tree::default();
    let real = s
        .put_message(&reapi::Tree {
            root: Some(reapi::Directory::default()),
            ..tree
        })
        .unwrap();
    let hostile = Digest::from_parts(*real.hash_bytes(), 1 << 50);
    match s.get_bytes(&hostile) {
        Err(StoreError::TooLarge { size, .. }) => assert_eq!(size, 1 << 50),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        s.get_message::<reapi::Tree>(&hostile, "Tree"),
        Err(StoreError::TooLarge { .. })
    ));
    // Under the in-memory bound but not the file's size: a miss, still no allocation.
    let lying = Digest::from_parts(*real.hash_bytes(), MAX_IN_MEMORY_BLOB - 1);
    assert!(matches!(
        s.get_bytes(&lying),
        Err(StoreError::Missing { .. })
    ));
    assert!(!s.contains(&hostile) && !s.contains(&lying));
    assert!(s.get_message::<reapi::Tree>(&real, "Tree").is_ok());
}

// See: issue 12, defect 4
#[test]
fn r12_a_size_mismatch_keeps_the_valid_blob() {
    let (_d, s) = store(1 << 30);
    let real = s.put_bytes(b"the valid blob").unwrap();
    for wrong in [real.size() + 1, real.size() - 1] {
        let digest = Digest::from_parts(*real.hash_bytes(), wrong);
        assert!(!s.contains(&digest), "size {wrong} must be a miss");
        assert!(matches!(
            s.get_bytes(&digest),
            Err(StoreError::Missing { .. })
        ));
        assert!(matches!(s.verify(&digest), Err(StoreError::Missing { .. })));
        assert!(s.put_bytes(b"the valid blob").is_ok());
        assert!(s.contains(&real), "the valid blob was deleted");
        assert_eq!(s.get_bytes(&real).unwrap(), b"the valid blob");
    }
}

#[test]
fn a_torn_blob_of_the_wrong_size_is_replaced_by_the_next_store() {
    let (_d, s) = store(1 << 30);
    let real = s.put_bytes(b"whole content").unwrap();
    let path = s.blob_path(&real);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"whole").unwrap();
    assert!(!s.contains(&real));
    assert_eq!(s.put_bytes(b"whole content").unwrap(), real);
    assert_eq!(s.get_bytes(&real).unwrap(), b"whole content");
}

// See: issue 12, defect 6
#[test]
fn r12_blobs_in_use_are_not_evicted_even_past_the_limit() {
    let (_d, s) = store(1000);
    // One action's inputs: together three times the cache size.
    let inputs: Vec<Digest> = (0..3u8).map(|i| s.put_bytes(&[i; 1000]).unwrap()).collect();
    for d in &inputs {
        assert!(s.contains(d), "an input just stored was evicted");
        assert_eq!(s.get_bytes(d).unwrap().len(), 1000);
    }
    // Once they age past the grace period they go.
    for d in &inputs {
        age(&s, d, EVICTION_GRACE.as_secs() + 120);
    }
    s.evict().unwrap();
    assert!(inputs.iter().all(|d| !s.blob_path(d).exists()));
}

// See: issue 12, defect 6
#[test]
fn r12_contains_refreshes_age() {
    let (_d, s) = store(1 << 30);
    let d = s.put_bytes(b"used again").unwrap();
    age(&s, &d, 3600);
    assert!(s.contains(&d));
    let mtime = fs::metadata(s.blob_path(&d)).unwrap().modified().unwrap();
    let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
    assert!(
        age < TOUCH_GRANULARITY,
        "contains left the blob {age:?} old"
    );
}

#[test]
fn a_shorter_grace_lets_eviction_take_recent_entries() {
    let (_d, s) = store(1000);
    let s = s.with_eviction_grace(Duration::from_secs(20));
    let d = s.put_bytes(&[9u8; 800]).unwrap();
    age(&s, &d, 30);
    s.put_bytes(&[8u8; 800]).unwrap();
    assert!(!s.blob_path(&d).exists(), "30 s old is past a 20 s grace");
}

#[test]
fn verify_all_removes_damage_and_counts_the_rest() {
    let (_d, s) = store(1 << 30);
    let good = s.put_bytes(b"good").unwrap();
    let bad = s.put_bytes(b"bad!").unwrap();
    let path = s.blob_path(&bad);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"BAD!").unwrap();
    s.put_action_result(&good, &reapi::ActionResult::default())
        .unwrap();
    let report = s.verify_all().unwrap();
    assert_eq!(
        report,
        VerifyReport {
            blobs_ok: 1,
            blobs_removed: 1,
            records_ok: 1,
            records_removed: 0
        }
    );
    assert!(!path.exists());
}

#[test]
fn unwritable_directory_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = Store::open(file.join("store"), 1 << 20).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn inputs_link_to_one_read_only_inode_per_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (d, s) = store(1 << 30);
    let blob = s.put_bytes(b"#!/bin/sh\necho linked\n").unwrap();
    let work = d.path().join("store/work");
    fs::create_dir_all(&work).unwrap();
    let (a, b, x) = (work.join("a"), work.join("b"), work.join("x"));
    let la = s.link_input(&blob, &a, false).unwrap().expect("linked");
    let lb = s.link_input(&blob, &b, false).unwrap().expect("linked");
    let lx = s.link_input(&blob, &x, true).unwrap().expect("linked");
    let (ma, mb, mx) = (
        fs::metadata(&a).unwrap(),
        fs::metadata(&b).unwrap(),
        fs::metadata(&x).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino(), "one inode for every plain use");
    assert_ne!(ma.ino(), mx.ino(), "the executable use has its own copy");
    assert_eq!(ma.permissions().mode() & 0o7777, 0o444);
    assert_eq!(mx.permissions().mode() & 0o7777, 0o555);
    assert_eq!(fs::read(&x).unwrap(), b"#!/bin/sh\necho linked\n");
    assert!(s.check_linked(&[la, lb.clone(), lx.clone()]).is_empty());
    // The empty blob has no file to link: it is created.
    let empty = work.join("empty");
    assert!(
        s.link_input(&Digest::empty(), &empty, false)
            .unwrap()
            .is_none()
    );
    assert_eq!(fs::read(&empty).unwrap(), b"");
    // An evicted or removed copy is made again from the blob.
    fs::remove_file(lx.source()).unwrap();
    let again = work.join("x2");
    assert!(s.link_input(&blob, &again, true).unwrap().is_some());
}

#[test]
fn an_input_written_through_its_link_is_removed_from_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let (d, s) = store(1 << 30);
    let blob = s.put_bytes(b"int shared;\n").unwrap();
    let work = d.path().join("store/work");
    fs::create_dir_all(&work).unwrap();
    let input = work.join("shared.h");
    let linked = s.link_input(&blob, &input, false).unwrap().expect("linked");
    // A command that makes its input writable and rewrites it (as root it need not even
    // chmod): the store's blob is that inode.
    fs::set_permissions(&input, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&input, b"int changed;\n").unwrap();
    let changed = s.check_linked(&[linked]);
    assert_eq!(changed, [s.blob_path(&blob)]);
    assert!(
        !s.contains(&blob),
        "the damaged blob is gone, to be fetched again"
    );
    // Stored again, it links afresh (the action's old link is a different inode now).
    assert_eq!(s.put_bytes(b"int shared;\n").unwrap(), blob);
    let again = work.join("again.h");
    assert!(s.link_input(&blob, &again, false).unwrap().is_some());
    assert_eq!(fs::read(&again).unwrap(), b"int shared;\n");
}

#[test]
fn usage_counts_and_evict_older_than_spares_what_was_used_recently() {
    let (_d, s) = store(1 << 30);
    let old = s.put_bytes(b"old bytes").unwrap();
    let young = s.put_bytes(b"young").unwrap();
    let usage = s.usage();
    assert_eq!((usage.blobs, usage.bytes), (2, 14));
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    File::options()
        .write(true)
        .open(s.blob_path(&old))
        .or_else(|_| {
            fs::set_permissions(
                s.blob_path(&old),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
            File::options().write(true).open(s.blob_path(&old))
        })
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    assert_eq!(
        s.evict_older_than(Duration::from_secs(3600)).unwrap(),
        (1, 9)
    );
    assert!(!s.contains(&old) && s.contains(&young));
    // The grace period holds even for a shorter age: what was just used stays.
    assert_eq!(s.evict_older_than(Duration::ZERO).unwrap(), (0, 0));
    let cleared = s.clone().with_eviction_grace(Duration::ZERO);
    assert_eq!(cleared.evict_older_than(Duration::ZERO).unwrap(), (1, 5));
    assert_eq!(s.usage(), Usage::default());
}

fn compressing(limit: u64) -> (tempfile::TempDir, Store) {
    let (d, s) = store(limit);
    (d, s.with_compression(true))
}

/// Text that compresses well, of `n` bytes.
fn prose(n: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

#[test]
fn compressed_blobs_round_trip_and_take_less_space() {
    let (d, s) = compressing(1 << 30);
    let data = prose(64 * 1024);
    let digest = s.put_bytes(&data).unwrap();
    assert!(!s.blob_path(&digest).exists(), "kept raw");
    let on_disk = fs::metadata(s.compressed_path(&digest)).unwrap().len();
    assert!(on_disk < data.len() as u64 / 8, "{on_disk} bytes on disk");
    assert_eq!(s.accounted_size().unwrap(), on_disk);
    assert!(s.contains(&digest));
    assert_eq!(s.get_bytes(&digest).unwrap(), data);
    let mut out = Vec::new();
    s.write_blob_to(&digest, &mut out).unwrap();
    assert_eq!(out, data);
    let file = d.path().join("object.o");
    fs::write(&file, prose(10_000)).unwrap();
    let from_file = s.put_file(&file, None).unwrap();
    assert_eq!(from_file, Digest::of_bytes(&prose(10_000)));
    assert!(s.compressed_path(&from_file).exists());
    assert_eq!(s.get_bytes(&from_file).unwrap(), prose(10_000));
    assert_eq!(s.usage().compressed_blobs, 2);
    assert_eq!(s.usage().blobs, 0);
}

#[test]
fn small_or_incompressible_blobs_stay_raw() {
    let (_d, s) = compressing(1 << 30);
    let small = s.put_bytes(&prose(MIN_COMPRESSED as usize - 1)).unwrap();
    // SHA-256 output chained: as good as random, so zstd cannot shrink it.
    let mut noise = Vec::new();
    let mut block = Digest::of_bytes(b"seed");
    while noise.len() < 8192 {
        block = Digest::of_bytes(block.hash_bytes());
        noise.extend_from_slice(block.hash_bytes());
    }
    let noisy = s.put_bytes(&noise).unwrap();
    for d in [small, noisy] {
        assert!(s.blob_path(&d).exists() && !s.compressed_path(&d).exists());
    }
    let (_d, off) = store(1 << 30);
    let d = off.put_bytes(&prose(64 * 1024)).unwrap();
    assert!(off.blob_path(&d).exists(), "compression is off by default");
}

#[test]
fn a_damaged_compressed_blob_is_removed_not_served() {
    let (_d, s) = compressing(1 << 30);
    let data = prose(32 * 1024);
    for damage in [0usize, 1] {
        let digest = s.put_bytes(&data).unwrap();
        let path = s.compressed_path(&digest);
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let mut frame = fs::read(&path).unwrap();
        // The frame's body (it no longer decodes), or its last byte (it decodes short).
        let at = if damage == 0 {
            frame.len() / 2
        } else {
            frame.len() - 1
        };
        frame[at] ^= 0x55;
        fs::write(&path, frame).unwrap();
        match s.get_bytes(&digest) {
            Err(StoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("damage {damage}: expected Corrupt, got {other:?}"),
        }
        assert!(!path.exists() && !s.contains(&digest));
    }
    // verify_all finds what no read has found yet.
    let digest = s.put_bytes(&data).unwrap();
    let path = s.compressed_path(&digest);
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut frame = fs::read(&path).unwrap();
    let mid = frame.len() / 2;
    frame[mid] ^= 0x55;
    fs::write(&path, frame).unwrap();
    let report = s.verify_all().unwrap();
    assert_eq!((report.blobs_ok, report.blobs_removed), (0, 1));
    assert!(!path.exists());
}

#[test]
fn a_compressed_blob_is_linked_through_a_raw_copy() {
    use std::os::unix::fs::MetadataExt;
    let (d, s) = compressing(1 << 30);
    let data = prose(16 * 1024);
    let digest = s.put_bytes(&data).unwrap();
    let dest = d.path().join("input");
    let linked = s.link_input(&digest, &dest, false).unwrap();
    assert!(linked.is_some(), "linked, not copied");
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(
        fs::metadata(&dest).unwrap().ino(),
        fs::metadata(s.blob_path(&digest)).unwrap().ino()
    );
    let exe = d.path().join("tool");
    s.link_input(&digest, &exe, true).unwrap();
    assert_eq!(fs::read(&exe).unwrap(), data);
}

#[test]
fn clear_and_eviction_take_compressed_blobs_too() {
    let (_d, s) = compressing(1 << 30);
    let old = s.put_bytes(&prose(20_000)).unwrap();
    let new = s.put_bytes(&prose(30_000)).unwrap();
    File::open(s.compressed_path(&old))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
        .unwrap();
    let removed = s.evict_older_than(Duration::from_secs(24 * 3600)).unwrap();
    assert_eq!(removed.0, 1);
    assert!(!s.contains(&old) && s.contains(&new));
    let s = s.with_eviction_grace(Duration::ZERO);
    s.evict_older_than(Duration::ZERO).unwrap();
    assert!(!s.contains(&new));
    assert_eq!(s.accounted_size().unwrap(), 0);
}
