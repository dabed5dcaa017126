//! The runtime refuses paths that would reach outside the action's directory: by their
//! spelling (absolute, `..`) and through symlinks among the inputs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use llama_core::{ActionSpec, Digest, HashCache, PreparedAction, TreeBuilder};
use llama_runtime::{FailureKind, Service, Settings, wire};

/// `true` with the given outputs and working directory, set on the Command directly (the
/// client side refuses such paths, a forged request need not).
fn forged(tree: TreeBuilder, outputs: &[&str], working_directory: &str) -> PreparedAction {
    let mut a = ActionSpec {
        arguments: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo x > f 2>/dev/null; true".into(),
        ],
        ..Default::default()
    }
    .prepare(tree.build())
    .expect("prepare");
    a.command.output_paths = outputs.iter().map(|s| s.to_string()).collect();
    a.command.working_directory = working_directory.to_string();
    a.command_digest = Digest::of_message(&a.command);
    a.action.command_digest = Some(a.command_digest.to_proto());
    a.action_digest = Digest::of_message(&a.action);
    a
}

async fn refused(service: &Service, a: &PreparedAction, names: &str) {
    let request = wire::Request::everything_inline(a).expect("request");
    let err = service
        .handle(request)
        .await
        .expect_err("a path outside the action's directory must be refused");
    assert_eq!(err.kind, FailureKind::BadRequest, "{err}");
    assert!(err.message.contains(names), "{err}");
}

#[tokio::test]
async fn r12_runtime_refuses_absolute_and_parent_paths() {
    // See: issue 12, defect 3
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).expect("service");
    for bad in ["../escape", "a/../../escape", "/tmp/escape"] {
        let a = forged(TreeBuilder::new(), &[bad], "");
        refused(&service, &a, bad).await;
        let a = forged(TreeBuilder::new(), &["out"], bad);
        refused(&service, &a, bad).await;
    }
}

#[tokio::test]
async fn r12_runtime_refuses_outputs_through_input_symlinks() {
    // See: issue 12, defect 3
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("proj")).expect("mkdir");
    fs::write(outside.join("secret"), b"secret\n").expect("write");
    fs::write(outside.join("proj/file"), b"file\n").expect("write");
    let inputs = dir.path().join("d");
    fs::create_dir(&inputs).expect("mkdir");
    std::os::unix::fs::symlink(&outside, inputs.join("link")).expect("symlink");
    let mut tree = TreeBuilder::new();
    tree.add_path(&HashCache::in_memory(), &inputs, "d")
        .expect("add d");

    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).expect("service");
    for output in ["d/link/secret", "d/link/proj", "d/link/newdir/f"] {
        let a = forged(tree.clone(), &[output], "");
        refused(&service, &a, "symlink \"d/link\"").await;
    }
    let a = forged(tree.clone(), &["f"], "d/link");
    refused(&service, &a, "symlink \"d/link\"").await;

    assert_untouched(&outside.join("secret"), 0o644);
    assert_untouched(&outside.join("proj/file"), 0o644);
    assert!(
        !outside.join("newdir").exists(),
        "a directory was created outside"
    );
    assert!(
        !outside.join("f").exists(),
        "the command ran in the outside directory"
    );
}

fn assert_untouched(path: &Path, mode: u32) {
    let meta = fs::metadata(path).expect("still there");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        mode,
        "{}",
        path.display()
    );
    assert_eq!(meta.nlink(), 1, "{} was linked", path.display());
}
