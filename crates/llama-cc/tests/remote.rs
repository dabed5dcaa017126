//! Remote compiles, with this machine's executor standing in for the remote one: the
//! action must carry the whole toolchain and every header, and the object and depfile
//! delivered must be byte-identical to the local compiler's.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use llama_cc::{CompileReply, CompileRequest, CompileService, Stats};
use llama_core::{HashCache, Store};
use llama_exec::{CachePolicy, Engine, LocalExecutor};

const TIMEOUT: Duration = Duration::from_secs(120);

fn service(dir: &Path) -> CompileService {
    let store = Store::open(dir.join("store"), 4 << 30).unwrap();
    // The executor runs each action in a scratch directory materialised from the action's
    // inputs alone: what the compile needs must be in them.
    let executor = LocalExecutor::new(store.clone(), 2, TIMEOUT);
    let engine = Engine::new(store.clone(), Arc::new(executor), CachePolicy::default());
    CompileService::new(
        store,
        Arc::new(HashCache::load(dir.join("hashcache"))),
        Arc::new(Stats::default()),
        2,
        TIMEOUT,
        0o022,
    )
    .with_remote(engine)
}

fn env(extra: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("LLAMACC_LOCAL_FALLBACK".into(), "0".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A small project: a header found through an absolute -I, one found beside the source,
/// __FILE__ and assert (paths in the object's data), system headers.
fn project(root: &Path) {
    write(
        &root.join("inc/config.h"),
        "#define GREETING \"hello\"\n#include <string.h>\n",
    );
    write(
        &root.join("src/local.h"),
        "static inline int twice(int x) { return 2 * x; }\n",
    );
    write(
        &root.join("src/main.c"),
        "#include <stdio.h>\n#include <assert.h>\n#include \"config.h\"\n#include \"local.h\"\n\
         int main(int argc, char **argv) { assert(argc > 0); printf(\"%s %s %d %zu\\n\", GREETING, __FILE__, twice(argc), strlen(argv[0])); return 0; }\n",
    );
    write(
        &root.join("src/vec.cc"),
        "#include <vector>\n#include <string>\n#include <iostream>\n\
         int f(int n) { std::vector<std::string> v(n, \"x\"); for (auto &s : v) std::cout << s; return v.size(); }\n",
    );
}

async fn compile(svc: &CompileService, cwd: &Path, cxx: bool, args: &[String]) -> (i32, String) {
    let reply = svc
        .compile(CompileRequest {
            cxx,
            compiler: None,
            args: args.iter().map(OsString::from).collect(),
            cwd: cwd.to_path_buf(),
            env: env(&[]),
            umask: 0o022,
        })
        .await;
    match reply {
        CompileReply::Done {
            exit_code,
            stderr,
            notes,
            ..
        } => (
            exit_code,
            format!("{}{}", notes.join("\n"), String::from_utf8_lossy(&stderr)),
        ),
        CompileReply::RunLocally { reason, .. } => panic!("ran locally: {reason}"),
    }
}

fn reference(cwd: &Path, program: &str, args: &[String]) {
    let status = std::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_objects_and_depfiles_are_identical_to_local_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap().join("proj");
    project(&root);
    let svc = service(dir.path());
    let src = root.join("src");
    let inc = format!("-I{}", root.join("inc").display());
    let cases: Vec<(bool, &str, Vec<String>)> = vec![
        (
            false,
            "gcc",
            vec![
                "-O2".into(),
                "-g".into(),
                inc.clone(),
                "-MMD".into(),
                "-c".into(),
                "main.c".into(),
                "-o".into(),
                "OUT.o".into(),
            ],
        ),
        (
            false,
            "gcc",
            vec![
                "-O0".into(),
                "-g3".into(),
                inc.clone(),
                "-MD".into(),
                "-MP".into(),
                "-c".into(),
                src.join("main.c").display().to_string(),
                "-o".into(),
                root.join("out/OUT.o").display().to_string(),
            ],
        ),
        (
            true,
            "g++",
            vec![
                "-O2".into(),
                "-g".into(),
                "-MMD".into(),
                "-c".into(),
                "vec.cc".into(),
                "-o".into(),
                "OUT.o".into(),
            ],
        ),
        // The user's own maps keep working, __FILE__ included, whatever their kind.
        (
            false,
            "gcc",
            vec![
                "-g".into(),
                inc.clone(),
                format!("-ffile-prefix-map={}=/proj", root.display()),
                format!("-fmacro-prefix-map={}=SRC", src.display()),
                "-MD".into(),
                "-c".into(),
                src.join("main.c").display().to_string(),
                "-o".into(),
                "OUT.o".into(),
            ],
        ),
    ];
    fs::create_dir_all(root.join("out")).unwrap();
    for (i, (cxx, program, args)) in cases.into_iter().enumerate() {
        let with =
            |name: &str| -> Vec<String> { args.iter().map(|a| a.replace("OUT", name)).collect() };
        reference(&src, program, &with(&format!("ref{i}")));
        let (code, stderr) = compile(&svc, &src, cxx, &with(&format!("llama{i}"))).await;
        assert_eq!(code, 0, "case {i}: {stderr}");
        let find = |name: &str| {
            [src.join(name), root.join("out").join(name)]
                .into_iter()
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("case {i}: {name} missing"))
        };
        let (a, b) = (find(&format!("ref{i}.o")), find(&format!("llama{i}.o")));
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "case {i}: {} differs from {}",
            b.display(),
            a.display()
        );
        let (a, b) = (find(&format!("ref{i}.d")), find(&format!("llama{i}.d")));
        assert_eq!(
            fs::read_to_string(&a)
                .unwrap()
                .replace(&format!("ref{i}"), "X"),
            fs::read_to_string(&b)
                .unwrap()
                .replace(&format!("llama{i}"), "X"),
            "case {i}: depfile"
        );
    }
    let stats = svc.stats().snapshot();
    assert_eq!(stats.counters.get("remote"), Some(&4), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_diagnostics_name_the_users_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap().join("proj");
    write(
        &root.join("inc/bad.h"),
        "static int unused_fn(void) { return 0; }\n",
    );
    write(
        &root.join("src/a.c"),
        "#include \"bad.h\"\nint main(void) { int x; return y; }\n",
    );
    let svc = service(dir.path());
    let src = root.join("src");
    let args: Vec<String> = vec![
        "-Wall".into(),
        format!("-I{}", root.join("inc").display()),
        "-c".into(),
        "a.c".into(),
    ];
    let (code, stderr) = compile(&svc, &src, false, &args).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("a.c:2:"), "{stderr}");
    assert!(stderr.contains("'y' undeclared"), "{stderr}");
    assert!(
        !stderr.contains("llama-cache") && !stderr.contains("/slot-"),
        "{stderr}"
    );
}

/// An executor that runs actions here and, from its first action on, has a notice for the
/// user (as the reapi executor has when it loses its server and waits for it).
struct Noticing {
    inner: LocalExecutor,
    notices: std::sync::Mutex<Vec<String>>,
    raised: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl llama_exec::Executor for Noticing {
    fn name(&self) -> &'static str {
        "noticing"
    }

    async fn execute(
        &self,
        action: &llama_core::PreparedAction,
    ) -> Result<llama_exec::ExecOutcome, llama_exec::ExecError> {
        if !self.raised.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.notices
                .lock()
                .unwrap()
                .push("noticing: lost the server; resuming (said once)".into());
        }
        self.inner.execute(action).await
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executors_notice_reaches_the_compile_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap().join("proj");
    project(&root);
    let store = Store::open(dir.path().join("store"), 4 << 30).unwrap();
    let executor = Noticing {
        inner: LocalExecutor::new(store.clone(), 2, TIMEOUT),
        notices: std::sync::Mutex::new(Vec::new()),
        raised: std::sync::atomic::AtomicBool::new(false),
    };
    let engine = Engine::new(store.clone(), Arc::new(executor), CachePolicy::default());
    let svc = CompileService::new(
        store,
        Arc::new(HashCache::load(dir.path().join("hashcache"))),
        Arc::new(Stats::default()),
        2,
        TIMEOUT,
        0o022,
    )
    .with_remote(engine);
    let src = root.join("src");
    let inc = format!("-I{}", root.join("inc").display());
    let mut said = Vec::new();
    for out in ["a.o", "b.o"] {
        let args: Vec<String> = vec![
            "-O1".into(),
            inc.clone(),
            "-c".into(),
            "main.c".into(),
            "-o".into(),
            out.into(),
        ];
        let (code, stderr) = compile(&svc, &src, false, &args).await;
        assert_eq!(code, 0, "{stderr}");
        said.push(stderr);
    }
    assert_eq!(
        said[0].trim(),
        "llamacc: warning: noticing: lost the server; resuming (said once)"
    );
    assert_eq!(said[1].trim(), "", "said once");
}
