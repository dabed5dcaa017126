//! Results from places llama does not control (an action cache another process or server
//! filled, a remote executor) against the real engine, store and local executor: each
//! hostile shape is refused with an error naming it, nothing is written outside the
//! outputs, and multi-output delivery is all or nothing.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use llama_core::{Digest, PreparedAction, Store, reapi};
use llama_exec::{Engine, ExecError, OutputMapping, Refusal, ResultLimits, cached_result_within};
use llama_testkit::engine::fixture;
use proptest::prelude::*;

fn sh(script: &str, outputs: &[&str]) -> PreparedAction {
    llama_testkit::engine::sh(script, &[], outputs)
}

fn mapping(remote: &str, local: &Path) -> OutputMapping {
    OutputMapping {
        remote: remote.into(),
        local: local.to_path_buf(),
    }
}

fn file_node(name: &str, digest: &Digest) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(digest.to_proto()),
        ..Default::default()
    }
}

fn dir_node(name: &str, d: &reapi::Directory) -> reapi::DirectoryNode {
    reapi::DirectoryNode {
        name: name.into(),
        digest: Some(Digest::of_message(d).to_proto()),
    }
}

/// A Tree `levels` deep whose every directory lists the one below twice: a few hundred
/// bytes that expand to 2^levels directories.
fn bomb(file: &Digest, levels: usize) -> reapi::Tree {
    let mut dir = reapi::Directory {
        files: vec![file_node("f", file)],
        ..Default::default()
    };
    let mut children = vec![];
    for _ in 0..levels {
        children.push(dir.clone());
        dir = reapi::Directory {
            directories: vec![dir_node("a", &dir), dir_node("b", &dir)],
            ..Default::default()
        };
    }
    reapi::Tree {
        root: Some(dir),
        children,
    }
}

/// Plants `result` as the cached result of `action` in the engine's store, as another
/// process (or a server whose result was cached) could have.
fn plant(engine: &Engine, action: &PreparedAction, result: &reapi::ActionResult) {
    engine
        .store()
        .put_action_result(&action.action_digest, result)
        .unwrap();
}

fn ok_result() -> reapi::ActionResult {
    reapi::ActionResult {
        exit_code: 0,
        ..Default::default()
    }
}

fn entries_under(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

// See: issue 12, defect 4
#[tokio::test]
async fn r12_a_cached_tree_bomb_is_refused_not_expanded() {
    let f = fixture();
    let store = f.engine.store();
    let blob = store.put_bytes(b"x").unwrap();
    // 2^24 directories: far past the default max_output_nodes, a few KB as a Tree.
    let tree = bomb(&blob, 24);
    let tree_digest = store.put_message(&tree).unwrap();
    assert!(tree_digest.size() < 4096, "{tree_digest}");
    let action = sh("mkdir -p out && echo genuine > out/f", &["out"]);
    let mut result = ok_result();
    result.output_directories = vec![reapi::OutputDirectory {
        path: "out".into(),
        tree_digest: Some(tree_digest.to_proto()),
        ..Default::default()
    }];
    plant(&f.engine, &action, &result);
    let out = f.dir.path().join("work/out");
    let engine = f.engine.clone();
    let mappings = vec![mapping("out", &out)];
    // Bounded: expanding the bomb would run for hours; refusing it takes milliseconds.
    let started = Instant::now();
    let delivered = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::spawn(async move { engine.run_and_deliver(&action, &mappings).await }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "still delivering after 20 s: the tree bomb is being expanded ({} entries so far)",
            entries_under(&out)
        )
    })
    .unwrap()
    .unwrap();
    // The bomb was dropped from the cache and the action ran for real.
    assert!(!delivered.finished.cached);
    assert_eq!(
        fs::read_to_string(f.dir.path().join("work/out/f")).unwrap(),
        "genuine\n"
    );
    assert_eq!(entries_under(&f.dir.path().join("work/out")), 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

// See: issue 12, defect 4
#[test]
fn r12_a_tree_bomb_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
    let blob = store.put_bytes(b"x").unwrap();
    let tree = bomb(&blob, 14);
    let tree_digest = store.put_message(&tree).unwrap();
    let action = Digest::of_bytes(b"action");
    let mut result = ok_result();
    result.output_directories = vec![reapi::OutputDirectory {
        path: "out".into(),
        tree_digest: Some(tree_digest.to_proto()),
        ..Default::default()
    }];
    store.put_action_result(&action, &result).unwrap();
    let limits = ResultLimits {
        max_nodes: 10_000,
        ..Default::default()
    };
    // 2^15 - 1 directories and 2^14 files is past 10,000: not a hit, and dropped.
    assert_eq!(
        cached_result_within(&store, &action, &limits).unwrap(),
        None
    );
    assert_eq!(store.get_action_result(&action).unwrap(), None);
    // Within the limits it is served.
    store.put_action_result(&action, &result).unwrap();
    let generous = ResultLimits::default();
    assert!(
        cached_result_within(&store, &action, &generous)
            .unwrap()
            .is_some()
    );
    // The refusal names the setting that would let it through.
    let message = Refusal::TooManyNodes {
        output: "out".into(),
        limit: 10_000,
    }
    .to_string();
    assert!(message.contains("max_output_nodes"), "{message}");
}

// See: issue 12, defect 4
#[tokio::test]
async fn r12_a_cached_tree_of_2_pow_50_bytes_is_refused_before_reading() {
    let f = fixture();
    let action = sh("mkdir -p out && echo genuine > out/f", &["out"]);
    let mut result = ok_result();
    // A real Tree's hash with a size of 2^50: reading it would allocate a petabyte.
    let tree = reapi::Tree::default();
    let real = f.engine.store().put_message(&tree).unwrap();
    let huge = Digest::from_parts(*real.hash_bytes(), 1 << 50);
    result.output_directories = vec![reapi::OutputDirectory {
        path: "out".into(),
        tree_digest: Some(huge.to_proto()),
        ..Default::default()
    }];
    plant(&f.engine, &action, &result);
    let out = f.dir.path().join("work/out");
    let delivered = f
        .engine
        .run_and_deliver(&action, &[mapping("out", &out)])
        .await
        .unwrap();
    assert!(!delivered.finished.cached);
    assert_eq!(fs::read_to_string(out.join("f")).unwrap(), "genuine\n");
}

/// Delivers `result` (as if cached) to `work/out` and returns the error.
fn refused(result: &reapi::ActionResult, outputs: &[&str]) -> (tempfile::TempDir, ExecError) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
    store.put_bytes(b"payload").unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let mappings: Vec<OutputMapping> = outputs.iter().map(|o| mapping(o, &work.join(o))).collect();
    let err = llama_exec::deliver_outputs(&store, result, &mappings, 0o022)
        .expect_err("the hostile result was delivered");
    (dir, err)
}

// See: issue 12, defect 4
#[test]
fn r12_output_symlinks_pointing_out_are_refused() {
    for target in ["/etc/passwd", "../../outside", "a/../../../x"] {
        let mut result = ok_result();
        result.output_symlinks = vec![reapi::OutputSymlink {
            path: "link".into(),
            target: target.into(),
            ..Default::default()
        }];
        let (dir, err) = refused(&result, &["link"]);
        assert!(
            matches!(
                &err,
                ExecError::Refused {
                    why: Refusal::SymlinkEscapes { .. },
                    ..
                }
            ),
            "{target}: {err}"
        );
        assert!(err.to_string().contains("outside the outputs"), "{err}");
        assert!(fs::symlink_metadata(dir.path().join("work/link")).is_err());
    }
}

// See: issue 12, defect 4
#[test]
fn r12_symlinks_inside_an_output_tree_pointing_out_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
    let sub = reapi::Directory {
        symlinks: vec![reapi::SymlinkNode {
            name: "escape".into(),
            target: "../../etc".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tree = reapi::Tree {
        root: Some(reapi::Directory {
            directories: vec![dir_node("sub", &sub)],
            ..Default::default()
        }),
        children: vec![sub],
    };
    let mut result = ok_result();
    result.output_directories = vec![reapi::OutputDirectory {
        path: "out".into(),
        tree_digest: Some(store.put_message(&tree).unwrap().to_proto()),
        ..Default::default()
    }];
    let out = dir.path().join("out");
    let err = llama_exec::deliver_outputs(&store, &result, &[mapping("out", &out)], 0o022)
        .expect_err("delivered a symlink pointing out");
    assert!(err.to_string().contains("outside the outputs"), "{err}");
    assert!(!out.exists());
}

// See: issue 12, defect 4
#[test]
fn r12_names_and_paths_that_leave_the_outputs_are_refused() {
    let payload = Digest::of_bytes(b"payload");
    for path in ["/tmp/abs", "../up", "a/../../b", "", "a\0b"] {
        let mut result = ok_result();
        result.output_files = vec![reapi::OutputFile {
            path: path.into(),
            digest: Some(payload.to_proto()),
            ..Default::default()
        }];
        let (_dir, err) = refused(&result, &[path]);
        assert!(
            matches!(
                &err,
                ExecError::Refused {
                    why: Refusal::BadOutputPath { .. },
                    ..
                }
            ),
            "{path:?}: {err}"
        );
    }
    for name in ["..", ".", "a/b", "", "n\0ul"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        let d = store.put_bytes(b"payload").unwrap();
        let tree = reapi::Tree {
            root: Some(reapi::Directory {
                files: vec![file_node(name, &d)],
                ..Default::default()
            }),
            children: vec![],
        };
        let mut result = ok_result();
        result.output_directories = vec![reapi::OutputDirectory {
            path: "out".into(),
            tree_digest: Some(store.put_message(&tree).unwrap().to_proto()),
            ..Default::default()
        }];
        let out = dir.path().join("out");
        let err = llama_exec::deliver_outputs(&store, &result, &[mapping("out", &out)], 0o022)
            .expect_err("delivered a bad name");
        assert!(
            err.to_string().contains("not a plain file name"),
            "{name:?}: {err}"
        );
        assert!(!out.exists());
    }
}

// See: issue 12, defect 11
#[tokio::test]
async fn r12_multi_output_delivery_is_all_or_nothing() {
    let f = fixture();
    let work = f.dir.path().join("work");
    fs::write(work.join("a"), "old a\n").unwrap();
    // A directory where the second output file must go: it cannot be replaced by a file.
    fs::create_dir(work.join("b")).unwrap();
    fs::write(work.join("b/keep"), "user data\n").unwrap();
    let action = sh("echo new a > a && echo new b > b", &["a", "b"]);
    let err = f
        .engine
        .run_and_deliver(
            &action,
            &[mapping("a", &work.join("a")), mapping("b", &work.join("b"))],
        )
        .await
        .expect_err("b cannot be delivered");
    assert!(err.to_string().contains("/b"), "{err}");
    assert_eq!(
        fs::read_to_string(work.join("a")).unwrap(),
        "old a\n",
        "the first output was replaced though the second failed"
    );
    assert_eq!(
        fs::read_to_string(work.join("b/keep")).unwrap(),
        "user data\n"
    );
    // Nothing is left beside the destinations.
    let mut left: Vec<String> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["a", "b"]);
}

// See: issue 12, defect 11
#[tokio::test]
async fn r12_a_directory_output_is_rolled_back_too() {
    let f = fixture();
    let work = f.dir.path().join("work");
    fs::create_dir(work.join("d")).unwrap();
    fs::write(work.join("d/old"), "old\n").unwrap();
    fs::create_dir(work.join("z")).unwrap();
    let action = sh("mkdir d && echo new > d/new && echo z > z", &["d", "z"]);
    f.engine
        .run_and_deliver(
            &action,
            &[mapping("d", &work.join("d")), mapping("z", &work.join("z"))],
        )
        .await
        .expect_err("z cannot be delivered");
    assert_eq!(fs::read_to_string(work.join("d/old")).unwrap(), "old\n");
    assert!(!work.join("d/new").exists());
    // And when nothing is in the way, both land and the old directory is gone.
    fs::remove_dir(work.join("z")).unwrap();
    f.engine
        .run_and_deliver(
            &action,
            &[mapping("d", &work.join("d")), mapping("z", &work.join("z"))],
        )
        .await
        .unwrap();
    assert!(!work.join("d/old").exists());
    assert_eq!(fs::read_to_string(work.join("d/new")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(work.join("z")).unwrap(), "z\n");
}

// --- decoder property tests ------------------------------------------------------------------

/// A valid Tree with a few files, symlinks and subdirectories, and the store holding its
/// blobs: the seed the mutations start from.
fn seed_tree(store: &Store) -> reapi::Tree {
    let a = store.put_bytes(b"alpha").unwrap();
    let b = store.put_bytes(b"beta").unwrap();
    let leaf = reapi::Directory {
        files: vec![file_node("leaf.o", &a)],
        symlinks: vec![reapi::SymlinkNode {
            name: "up".into(),
            target: "../x.o".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mid = reapi::Directory {
        files: vec![file_node("m", &b)],
        directories: vec![dir_node("leaf", &leaf)],
        ..Default::default()
    };
    reapi::Tree {
        root: Some(reapi::Directory {
            files: vec![file_node("x.o", &a)],
            directories: vec![dir_node("mid", &mid), dir_node("mid2", &mid)],
            ..Default::default()
        }),
        children: vec![mid, leaf],
    }
}

/// Consumes `bytes` as a server's Tree (and an ActionResult naming it) through the checks
/// and the delivery: it may be refused, but must never panic, write outside `out`, or
/// expand past the limits.
fn consume(bytes: &[u8], store: &Store, base: &Path, limits: &ResultLimits) {
    use prost::Message;
    let Ok(tree) = reapi::Tree::decode(bytes) else {
        return;
    };
    let tree_digest = store.put_message(&tree).unwrap();
    let result = reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: "out".into(),
            tree_digest: Some(tree_digest.to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let action = Digest::of_bytes(bytes);
    store.put_action_result(&action, &result).unwrap();
    let _ = cached_result_within(store, &action, limits);
    let work = base.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let out = work.join("out");
    if llama_exec::deliver_outputs(store, &result, &[mapping("out", &out)], 0o022).is_ok() {
        // Everything delivered is inside `out`, and within the limits.
        let count = walkdir_count(&out);
        assert!(count as u64 <= limits.max_nodes + 1, "{count}");
    }
    let beside: Vec<_> = fs::read_dir(&work).unwrap().collect();
    assert!(beside.len() <= 1, "wrote beside the output: {beside:?}");
}

fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += 1;
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                let meta = fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    n += 1;
                }
            }
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    // See: issue 12, suites (decoder property tests)
    #[test]
    fn r12_mutated_trees_never_panic_nor_escape(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        cut_it in any::<bool>(),
    ) {
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        let mut bytes = seed_tree(&store).encode_to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if cut_it {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let limits = ResultLimits { max_nodes: 64, max_bytes: 1 << 20 };
        consume(&bytes, &store, dir.path(), &limits);
    }

    // See: issue 12, suites (decoder property tests)
    #[test]
    fn r12_arbitrary_result_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        consume(&bytes, &store, dir.path(), &ResultLimits { max_nodes: 64, max_bytes: 1 << 20 });
        if let Ok(result) = reapi::ActionResult::decode(&bytes[..]) {
            let work = dir.path().join("w");
            fs::create_dir(&work).unwrap();
            let outputs: Vec<OutputMapping> = result
                .output_files
                .iter()
                .map(|f| f.path.clone())
                .chain(result.output_directories.iter().map(|d| d.path.clone()))
                .chain(result.output_symlinks.iter().map(|l| l.path.clone()))
                .filter(|p| !p.is_empty() && !p.contains(['/', '\0']) && p != "." && p != "..")
                .map(|p| mapping(&p, &work.join(&p)))
                .collect();
            let _ = llama_exec::deliver_outputs(&store, &result, &outputs, 0o022);
            prop_assert!(fs::read_dir(dir.path()).unwrap().count() <= 3);
        }
    }
}
