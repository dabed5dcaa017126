//! What the cache may trust: inputs that change while they compile, paths that step out of
//! symlinks with `..`, and the logical directory gcc writes into objects. Each test runs the
//! daemon's compile service with real gcc on a real store and compares what llamacc leaves
//! on disk with what plain gcc writes.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use llama_cc::{CompileReply, CompileRequest, CompileService, Stats, StatsSnapshot};
use llama_core::{HashCache, Store};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A service with its own store and hash cache under `dir`.
fn service(dir: &Path) -> CompileService {
    let store = Store::open(dir.join("store"), 1 << 30).expect("open the store");
    CompileService::new(
        store,
        Arc::new(HashCache::load(dir.join("hashcache"))),
        Arc::new(Stats::default()),
        2,
        TIMEOUT,
        0o022,
    )
}

/// A scratch directory by its real path (the service is given real paths, as getcwd
/// gives them).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(dir.path()).expect("canonical temp dir");
    (dir, root)
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
    fs::write(path, text).expect("write a test file");
}

/// Compiles through the service from `cwd` with `env` added to a plain `PATH`; panics unless
/// the compile is done (cached or not) with exit code 0. Returns whether it was cached.
async fn llamacc(svc: &CompileService, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> bool {
    let mut full: Vec<(OsString, OsString)> = vec![("PATH".into(), "/usr/bin:/bin".into())];
    full.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    let reply = svc
        .compile(CompileRequest {
            cxx: false,
            compiler: None,
            args: args.iter().map(OsString::from).collect(),
            cwd: cwd.to_path_buf(),
            env: full,
            umask: 0o022,
        })
        .await;
    match reply {
        CompileReply::Done {
            exit_code,
            stderr,
            notes,
            cached,
            ..
        } => {
            assert_eq!(
                exit_code,
                0,
                "llamacc {args:?}: {}{}",
                notes.join("\n"),
                String::from_utf8_lossy(&stderr)
            );
            cached
        }
        CompileReply::RunLocally { reason, .. } => panic!("llamacc {args:?} ran locally: {reason}"),
    }
}

/// Plain gcc from `cwd`, with `PWD` set as a shell that went there by `pwd` would set it.
fn gcc(cwd: &Path, pwd: &Path, args: &[&str]) {
    let out = Command::new("gcc")
        .args(args)
        .current_dir(cwd)
        .env("PWD", pwd)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{} not written: {e}", path.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn reason(snap: &StatsSnapshot, name: &str) -> u64 {
    snap.reasons.get(name).copied().unwrap_or(0)
}

/// Files written by a test are older than the compile that follows by more than the
/// kernel's clock tick, so only the edits a test makes during a compile count as "too new".
fn settle() {
    std::thread::sleep(Duration::from_millis(60));
}

/// A source whose object carries the value of `VAL` from `val.h` as the text `tag-N`.
const TAGGED: &str = "#include \"val.h\"\n#define S(x) #x\n#define STR(x) S(x)\n\
                      const char tag[] = \"tag-\" STR(VAL);\n";

// See: issue 12, defect 2
#[tokio::test(flavor = "multi_thread")]
async fn r12_header_edited_during_compile_is_not_recorded() {
    let (_dir, root) = scratch();
    let svc = service(&root);
    let proj = root.join("proj");
    write(&proj.join("val.h"), "#define VAL 1\n");
    write(&proj.join("x.c"), TAGGED);
    // The compiler wrapper: gcc reads VAL 1, then (once, when `flip` exists, and only in a
    // compile, not in llamacc's probes of the compiler) the header becomes VAL 2 before the
    // compile is over, as an editor saving mid-build would do.
    let wrapper = root.join("cc-wrap");
    write(
        &wrapper,
        &format!(
            "#!/bin/sh\n/usr/bin/gcc \"$@\" || exit $?\n\
             case \" $* \" in *\" -c \"*) ;; *) exit 0 ;; esac\n\
             if [ -e {flip} ]; then rm {flip}; printf '#define VAL 2\\n' > {header}; fi\n",
            flip = root.join("flip").display(),
            header = proj.join("val.h").display(),
        ),
    );
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    let wrapper = wrapper.to_string_lossy().into_owned();
    let env = [("LLAMACC_LOCAL_CC", wrapper.as_str())];
    let args = ["-c", "x.c", "-o", "x.o"];
    let object = proj.join("x.o");
    settle();

    write(&root.join("flip"), "");
    assert!(!llamacc(&svc, &proj, &env, &args).await);
    assert!(
        contains(&read(&object), b"tag-1"),
        "the first compile read VAL 1"
    );
    assert_eq!(
        fs::read_to_string(proj.join("val.h")).ok().as_deref(),
        Some("#define VAL 2\n")
    );
    settle();

    // The header now says 2: the object must say 2, compiled and then served.
    for (round, want_cached) in [("second", false), ("third", true)] {
        fs::remove_file(&object).expect("remove the object");
        let cached = llamacc(&svc, &proj, &env, &args).await;
        assert!(
            contains(&read(&object), b"tag-2"),
            "{round} compile: the object still carries VAL 1 (cached = {cached})"
        );
        assert_eq!(cached, want_cached, "{round} compile");
    }
    // Counted once, under its name, and shown by `llama stats`.
    let snap = svc.snapshot();
    assert_eq!(reason(&snap, "input-too-new"), 1, "{snap:?}");
    assert_eq!(
        (
            snap.get("uncacheable"),
            snap.get("misses"),
            snap.get("hits")
        ),
        (1, 1, 1),
        "{snap:?}"
    );
    assert!(snap.report().contains("input-too-new"), "{}", snap.report());
}

/// `sub/dir`, `sym -> sub/dir` and a stale `x.o` where a lexical reading of `sym/../x.o`
/// would put the object.
fn symlinked_project(root: &Path) -> PathBuf {
    let proj = root.join("proj");
    fs::create_dir_all(proj.join("sub/dir")).expect("create sub/dir");
    symlink("sub/dir", proj.join("sym")).expect("symlink sym");
    write(&proj.join("x.c"), "int answer(void) { return 42; }\n");
    write(&proj.join("x.o"), "stale, not an object\n");
    proj
}

// See: issue 12, defect 5
#[tokio::test(flavor = "multi_thread")]
async fn r12_output_through_symlink_dotdot_lands_where_gcc_puts_it() {
    let (_dir, root) = scratch();
    let svc = service(&root);
    let proj = symlinked_project(&root);
    let args = ["-c", "x.c", "-o", "sym/../x.o"];
    gcc(&proj, &proj, &args);
    let reference = read(&proj.join("sub/x.o"));
    settle();

    for (round, want_cached) in [("first", false), ("second", true)] {
        fs::remove_file(proj.join("sub/x.o")).expect("remove sub/x.o");
        let cached = llamacc(&svc, &proj, &[], &args).await;
        assert!(
            read(&proj.join("sub/x.o")) == reference,
            "{round} run: sub/x.o differs from gcc's"
        );
        assert_eq!(
            fs::read_to_string(proj.join("x.o")).ok().as_deref(),
            Some("stale, not an object\n"),
            "{round} run touched ./x.o"
        );
        assert_eq!(cached, want_cached, "{round} run");
    }
}

// See: issue 12, defect 5
#[tokio::test(flavor = "multi_thread")]
async fn r12_depfile_and_header_through_symlink_dotdot() {
    let (_dir, root) = scratch();
    let svc = service(&root);
    let proj = symlinked_project(&root);
    // What the compiler reads through `sym/..` is sub/val.h; ./val.h is the decoy a lexical
    // reading would hash.
    write(&proj.join("sub/val.h"), "#define VAL 1\n");
    write(&proj.join("val.h"), "#define VAL 9\n");
    write(
        &proj.join("x.c"),
        &TAGGED.replace("\"val.h\"", "\"sym/../val.h\""),
    );
    let args = ["-MD", "-MF", "sym/../x.d", "-c", "x.c", "-o", "x.o"];
    settle();

    assert!(!llamacc(&svc, &proj, &[], &args).await);
    assert!(contains(&read(&proj.join("x.o")), b"tag-1"));
    assert!(
        contains(&read(&proj.join("sub/x.d")), b"x.o:"),
        "the depfile belongs in sub/"
    );
    assert!(!proj.join("x.d").exists(), "a depfile was written to ./x.d");

    fs::remove_file(proj.join("sub/x.d")).expect("remove sub/x.d");
    assert!(llamacc(&svc, &proj, &[], &args).await, "unchanged: a hit");
    assert!(contains(&read(&proj.join("sub/x.d")), b"x.o:"));

    write(&proj.join("sub/val.h"), "#define VAL 2\n");
    settle();
    llamacc(&svc, &proj, &[], &args).await;
    assert!(
        contains(&read(&proj.join("x.o")), b"tag-2"),
        "the header read through sym/.. changed, the object did not"
    );
}

// See: issue 12, defect 10
#[tokio::test(flavor = "multi_thread")]
async fn r12_pwd_through_symlink_names_the_logical_directory() {
    let (_dir, root) = scratch();
    let svc = service(&root);
    let real = root.join("real");
    let link = root.join("link");
    write(&real.join("x.c"), "int answer(void) { return 42; }\n");
    symlink("real", &link).expect("symlink link");
    let args = ["-g", "-O0", "-c", "x.c", "-o", "x.o"];
    let object = real.join("x.o");

    // What plain gcc writes from each spelling of the directory.
    // `real/` is the working directory too, and gcc writes it as spelled.
    let slashed = PathBuf::from(format!("{}/", real.display()));
    let mut reference = Vec::new();
    for pwd in [&link, &real, &slashed] {
        gcc(&real, pwd, &args);
        reference.push((pwd.clone(), read(&object)));
    }
    assert!(
        reference[0].1 != reference[1].1 && reference[1].1 != reference[2].1,
        "gcc names the directory as $PWD spells it"
    );
    assert!(contains(
        &reference[0].1,
        link.as_os_str().as_encoded_bytes()
    ));
    settle();

    // The daemon is given getcwd's answer (the real path) and the client's PWD: each
    // spelling once (misses), then each again (hits).
    for (round, (pwd, want)) in reference.iter().chain(reference.iter()).enumerate() {
        fs::remove_file(&object).expect("remove x.o");
        let pwd = pwd.to_string_lossy().into_owned();
        let cached = llamacc(&svc, &real, &[("PWD", pwd.as_str())], &args).await;
        assert!(
            read(&object) == *want,
            "round {round}, PWD={pwd}: x.o differs from gcc's (cached = {cached})"
        );
        assert_eq!(cached, round >= reference.len(), "round {round}, PWD={pwd}");
    }
}

// See: issue 12, defect 11 (names kept as bytes): two compiles that differ only in a
// non-UTF-8 byte of an argument are two actions, not one cached result for both.
#[tokio::test(flavor = "multi_thread")]
async fn r12_arguments_differing_in_non_utf8_bytes_are_different_keys() {
    use std::os::unix::ffi::OsStringExt;
    let (_dir, root) = scratch();
    write(&root.join("x.c"), "const char v[] = V;\n");
    settle();
    let svc = service(&root);
    for (round, byte) in [(0, 0xe9u8), (1, 0xe8u8), (2, 0xe9u8)] {
        let define = OsString::from_vec([b"-DV=\"".as_slice(), &[byte], b"\""].concat());
        let args: Vec<OsString> = ["-c", "x.c", "-o", "x.o"]
            .iter()
            .map(OsString::from)
            .chain(std::iter::once(define))
            .collect();
        let reply = svc
            .compile(CompileRequest {
                cxx: false,
                compiler: None,
                args,
                cwd: root.clone(),
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                umask: 0o022,
            })
            .await;
        let CompileReply::Done {
            exit_code, cached, ..
        } = reply
        else {
            panic!("round {round}: ran locally")
        };
        assert_eq!(exit_code, 0, "round {round}");
        // The third round repeats the first: only it may be served from the cache.
        assert_eq!(cached, round == 2, "round {round}: cached = {cached}");
        assert!(
            contains(&read(&root.join("x.o")), &[byte, 0]),
            "round {round}: x.o lacks the byte {byte:#x} its -D gave"
        );
    }
}
