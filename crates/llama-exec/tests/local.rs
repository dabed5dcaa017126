//! The local executor and the engine against real processes and a real on-disk store.

use std::fs;
use std::time::Duration;

use llama_core::Digest;
use llama_exec::{Engine, OutputMapping, Termination};
use llama_testkit::engine::{fixture, sh};

fn stdout_of(engine: &Engine, finished: &llama_exec::Finished) -> String {
    let d = Digest::from_field(finished.result.stdout_digest.as_ref()).unwrap();
    String::from_utf8(engine.store().get_bytes(&d).unwrap()).unwrap()
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported_faithfully() {
    let f = fixture();
    let seven = f.engine.run(&sh("exit 7", &[], &[])).await.unwrap();
    assert_eq!(seven.termination, Termination::Exited(7));
    let killed = f.engine.run(&sh("kill -TERM $$", &[], &[])).await.unwrap();
    assert_eq!(killed.termination, Termination::Signaled(15));
    assert_eq!(killed.termination.shell_status(), 143);
    let missing = f
        .engine
        .run(&sh("exec /nonexistent/tool", &[], &[]))
        .await
        .unwrap();
    assert_eq!(missing.termination, Termination::Exited(127));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let f = fixture();
    let mut action = sh("sleep 30 & sleep 30", &[], &[]);
    let mut spec_timeout = action.action.clone();
    spec_timeout.timeout = Some(llama_core::protobuf::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    action.action = spec_timeout;
    let started = std::time::Instant::now();
    let finished = f.engine.run(&action).await.unwrap();
    assert!(matches!(finished.termination, Termination::TimedOut(_)));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn inputs_outputs_and_the_action_cache() {
    let f = fixture();
    let action = sh(
        "mkdir -p out/sub && cat in.txt > out/sub/copy && echo ran && echo made > single",
        &[("in.txt", b"payload\n")],
        &["single", "out"],
    );
    let first = f.engine.run(&action).await.unwrap();
    assert!(!first.cached);
    assert_eq!(stdout_of(&f.engine, &first), "ran\n");
    let second = f.engine.run(&action).await.unwrap();
    assert!(second.cached, "same action twice must hit the cache");

    let local = f.dir.path().join("delivered");
    let mappings = vec![
        OutputMapping {
            remote: "single".into(),
            local: local.join("single"),
        },
        OutputMapping {
            remote: "out".into(),
            local: local.join("out"),
        },
    ];
    let delivered = f.engine.run_and_deliver(&action, &mappings).await.unwrap();
    assert!(delivered.written && delivered.missing.is_empty());
    assert_eq!(fs::read(local.join("single")).unwrap(), b"made\n");
    assert_eq!(fs::read(local.join("out/sub/copy")).unwrap(), b"payload\n");
}

#[tokio::test]
async fn failures_are_not_cached() {
    let f = fixture();
    let action = sh("echo once >> /dev/null; exit 3", &[], &[]);
    assert!(!f.engine.run(&action).await.unwrap().cached);
    assert!(!f.engine.run(&action).await.unwrap().cached);
}

#[tokio::test]
async fn missing_output_of_a_successful_command_writes_nothing() {
    let f = fixture();
    let action = sh("echo a > a", &[], &["a", "b"]);
    let local = f.dir.path().join("dest");
    let mappings = vec![
        OutputMapping {
            remote: "a".into(),
            local: local.join("a"),
        },
        OutputMapping {
            remote: "b".into(),
            local: local.join("b"),
        },
    ];
    let delivered = f.engine.run_and_deliver(&action, &mappings).await.unwrap();
    assert!(!delivered.written);
    assert_eq!(delivered.missing, vec![mappings[1].clone()]);
    assert!(!local.join("a").exists(), "no partial delivery");
    let leftovers: Vec<_> = fs::read_dir(&local).unwrap().collect();
    assert!(leftovers.is_empty(), "staging files must be cleaned up");
}

#[tokio::test]
async fn corrupt_cached_output_is_detected_and_the_action_reruns() {
    let f = fixture();
    let action = sh("echo fresh > o; echo ran", &[], &["o"]);
    let mappings = vec![OutputMapping {
        remote: "o".into(),
        local: f.dir.path().join("o"),
    }];
    f.engine.run_and_deliver(&action, &mappings).await.unwrap();
    let blob = f.engine.store().blob_path(&Digest::of_bytes(b"fresh\n"));
    fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&blob, b"frash\n").unwrap();
    let again = f.engine.run_and_deliver(&action, &mappings).await.unwrap();
    assert!(!again.finished.cached, "the damaged hit must be re-run");
    assert_eq!(fs::read(f.dir.path().join("o")).unwrap(), b"fresh\n");
}
