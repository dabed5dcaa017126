//! The store under stress, end to end: eviction racing with readers (`llama xargs`, a cache
//! smaller than one action), llama killed at random points of its writes, and hundreds of
//! concurrent llamacc processes on a store that is evicting throughout.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use llama_core::{Digest, HashCache, RecordKind, Store, reapi};

use llama_testkit::{World, files_under, run_with_stdin, stderr};

/// A small deterministic generator: tests must be reproducible from the seed they print.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos | 1
}

/// `lines` lines of hex text, different for each `salt`.
fn text(salt: u64, lines: usize) -> Vec<u8> {
    let mut rng = Rng(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(lines * 33);
    for _ in 0..lines {
        out.extend_from_slice(format!("{:016x}{:016x}\n", rng.next(), rng.next()).as_bytes());
    }
    out
}

fn ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
}

/// Sets every entry of the store (blobs, action results, manifests) `secs` into the past,
/// as if the build had happened that long ago.
fn age_store(store: &Path, secs: u64) {
    let then = SystemTime::now() - Duration::from_secs(secs);
    for kind in ["cas", "cas-z", "ac", "manifests"] {
        for path in files_under(&store.join(kind)) {
            if let Ok(f) = fs::File::open(&path) {
                let _ = f.set_modified(then);
            }
        }
    }
}

// See: issue 12, defect 6
#[test]
fn r12_xargs_with_a_4mib_cache_loses_no_blob() {
    // 40 inputs of 1 MiB: the eight actions running at once use four times the cache.
    for run in 0..3 {
        let w = crate::world();
        let mut names = Vec::new();
        for i in 0..40u64 {
            let name = format!("in{i}.txt");
            w.write(&name, &text(i + 1, 32 * 1024));
            names.push(name);
        }
        let listing = names.join("\n") + "\n";
        let cmd = w.llama(&[
            "xargs",
            "-j",
            "8",
            "f",
            "sh",
            "-c",
            "tac \"$1\" > \"$2\"",
            "tac",
            "{{.I .Line}}",
            "{{.O (printf \"out/%s\" .Line)}}",
        ]);
        let mut cmd = cmd;
        cmd.env("LLAMA_CACHE_SIZE", "4MiB");
        let out = run_with_stdin(cmd, &listing);
        ok(&format!("run {run}"), &out);
        for name in &names {
            let want = Command::new("tac").arg(w.path(name)).output().expect("tac");
            let got = fs::read(w.path(&format!("out/{name}"))).expect("output written");
            assert!(
                got == want.stdout,
                "run {run}: out/{name} differs from tac's"
            );
        }
    }
}

// See: issue 12, defect 6
#[test]
fn r12_a_cache_smaller_than_one_actions_inputs_still_runs() {
    let w = crate::world();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        // 1.5 MiB each, 4.5 MiB of inputs for a 1 MiB cache.
        w.write(name, &text(i as u64 + 7, 48 * 1024));
    }
    let mut cmd = w.llama(&[
        "invoke",
        "-f",
        "a",
        "-f",
        "b",
        "-f",
        "c",
        "-o",
        "OUT",
        "fn",
        "sh",
        "-c",
        "cat a b c > OUT",
    ]);
    cmd.env("LLAMA_CACHE_SIZE", "1MiB");
    let out = cmd.output().expect("llama invoke");
    ok("invoke", &out);
    let mut want = Vec::new();
    for name in ["a", "b", "c"] {
        want.extend(fs::read(w.path(name)).expect("input"));
    }
    assert!(
        fs::read(w.path("OUT")).expect("OUT") == want,
        "OUT is wrong"
    );
    let warnings = stderr(&out).matches("raise cache_size").count();
    assert_eq!(
        warnings,
        1,
        "say once that the cache is too small: {}",
        stderr(&out)
    );
}

// See: issue 12, defect 4
#[test]
fn r12_an_action_cache_entry_with_a_2_pow_50_tree_is_a_miss_not_a_crash() {
    let w = crate::world();
    w.write("in.txt", b"tree input\n");
    let args = [
        "invoke",
        "-f",
        "in.txt",
        "-o",
        "outdir",
        "fn",
        "sh",
        "-c",
        "mkdir -p outdir/sub && cp in.txt outdir/sub/copy",
    ];
    ok("first invoke", &w.run(&args));
    // Make the cached result name its output tree with a size of 2^50 bytes, as a corrupt
    // or hostile cache would.
    let store = Store::open(w.store(), u64::MAX).expect("open store");
    let entries = files_under(&w.store().join("ac"));
    assert_eq!(entries.len(), 1, "one cached result: {entries:?}");
    let name = entries[0]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let key = Digest::from_parts(hex32(name), 0);
    let mut result = store
        .get_action_result(&key)
        .expect("read ac")
        .expect("cached result");
    let tree = result.output_directories[0]
        .tree_digest
        .as_mut()
        .expect("tree digest");
    tree.size_bytes = 1 << 50;
    store.put_action_result(&key, &result).expect("write ac");
    fs::remove_dir_all(w.path("outdir")).expect("rm outdir");

    let again = w.run(&args);
    ok("invoke over the hostile entry", &again);
    let copy = fs::read(w.path("outdir/sub/copy")).expect("output rebuilt");
    assert_eq!(copy, b"tree input\n");
}

/// The 32 bytes a 64-digit hex name spells.
fn hex32(name: &str) -> [u8; 32] {
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
            .expect("a store entry is named by a hex digest");
    }
    hash
}

// ---------------------------------------------------------------------------------------
// Crash consistency

/// Set by the crash test in the environment of the copy of this binary it starts and kills.
const HAMMER_ENV: &str = "LLAMA_TEST_HAMMER_STORE";

/// The process the crash test kills: when started by it, writes to the store and the hash
/// cache with the real APIs until killed. Run normally, it does nothing.
#[test]
fn crash_hammer_child() {
    let Some(root) = std::env::var_os(HAMMER_ENV).map(PathBuf::from) else {
        return;
    };
    let store = Store::open(&root, 512 * 1024).expect("open store");
    let sources = root.join("..").join("hammer-src");
    let cache = HashCache::load(root.join("hashcache"));
    let mut rng = Rng(seed() ^ u64::from(std::process::id()));
    loop {
        let salt = rng.below(4096);
        // Blobs of every size class, some shared between children.
        let data = text(salt, rng.below(2048) as usize);
        let blob = store.put_bytes(&data).expect("put_bytes");
        let file = sources.join(format!("f{}", rng.below(64)));
        let meta = fs::metadata(&file).expect("hammer source");
        let file_digest = cache.digest(&file, &meta).expect("hash");
        store.put_file(&file, Some(file_digest)).expect("put_file");
        let result = reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(blob.to_proto()),
            output_files: vec![reapi::OutputFile {
                path: "out".into(),
                digest: Some(file_digest.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let key = Digest::of_bytes(&salt.to_le_bytes());
        store.put_action_result(&key, &result).expect("put ac");
        store
            .put_record(RecordKind::Manifest, &key, &data[..data.len().min(100)])
            .expect("put manifest");
        cache.save().expect("save hash cache");
        if rng.below(8) == 0 {
            // Make old entries to evict, so kills land inside eviction too.
            age_store(&root, 3600);
            store.evict().expect("evict");
        }
    }
}

fn start_hammer(root: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "trust_store::crash_hammer_child", "--nocapture"])
        .env(HAMMER_ENV, root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hammer")
}

/// A generated C project: `n` units sharing a header, each `unitI.c`.
fn c_project(w: &World, n: usize, salt: u64) -> Vec<String> {
    w.write(
        "proj/common.h",
        b"#ifndef COMMON_H\n#define COMMON_H\nstruct pair { int a, b; };\nint mix(struct pair p, int k);\n#endif\n",
    );
    (0..n)
        .map(|i| {
            let name = format!("unit{i}.c");
            let src = format!(
                "#include \"common.h\"\nstatic int table[] = {{ {a}, {b}, {c} }};\n\
                 int f{i}(int x) {{ struct pair p = {{ x, table[x % 3] }}; return mix(p, {a}) + {i}; }}\n\
                 int mix(struct pair p, int k) {{ return p.a * k + p.b; }}\n",
                a = salt + i as u64,
                b = salt * 3 + 1,
                c = i * 7,
            );
            w.write(&format!("proj/{name}"), src.as_bytes());
            name
        })
        .collect()
}

/// Compiles every unit with plain gcc into `ref/`, a few at a time.
fn reference_objects(w: &World, units: &[String]) {
    fs::create_dir_all(w.path("ref")).expect("mkdir ref");
    for chunk in units.chunks(8) {
        let children: Vec<Child> = chunk
            .iter()
            .map(|u| {
                Command::new("gcc")
                    .args(["-O1", "-c", &format!("proj/{u}"), "-o"])
                    .arg(format!("ref/{u}.o"))
                    .current_dir(w.work())
                    .spawn()
                    .expect("gcc")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("gcc").success(), "plain gcc failed");
        }
    }
}

/// Starts llamacc on every unit at once into `obj/`, waits for all, and asserts each
/// succeeded and its object is byte-identical to plain gcc's.
fn llamacc_all_at_once(w: &World, units: &[String], cache_size: &str) -> Duration {
    fs::create_dir_all(w.path("obj")).expect("mkdir obj");
    for u in units {
        let _ = fs::remove_file(w.path(&format!("obj/{u}.o")));
    }
    let started = Instant::now();
    let children: Vec<(String, Child)> = units
        .iter()
        .map(|u| {
            let mut cmd = w.llamacc("gcc", &["-O1", "-c", &format!("proj/{u}"), "-o"]);
            cmd.arg(format!("obj/{u}.o"))
                .env("LLAMA_CACHE_SIZE", cache_size)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            (u.clone(), cmd.spawn().expect("spawn llamacc"))
        })
        .collect();
    let mut failures = Vec::new();
    for (u, child) in children {
        let out = child.wait_with_output().expect("wait llamacc");
        if !out.status.success() {
            failures.push(format!("{u}: {}", stderr(&out)));
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let wrong: Vec<&String> = units
        .iter()
        .filter(|u| {
            fs::read(w.path(&format!("obj/{u}.o"))).ok()
                != fs::read(w.path(&format!("ref/{u}.o"))).ok()
        })
        .collect();
    assert!(wrong.is_empty(), "objects differ from gcc's: {wrong:?}");
    elapsed
}

fn start_daemon(w: &World, cache_size: &str) {
    let mut cmd = w.llama(&["daemon", "start"]);
    cmd.env("LLAMA_CACHE_SIZE", cache_size);
    ok(
        "llama daemon start",
        &cmd.output().expect("llama daemon start"),
    );
}

#[test]
fn crash_consistency_200_kills_then_verify_and_rebuild() {
    const KILLS: usize = 200;
    let started = Instant::now();
    let seed = seed();
    eprintln!("crash consistency: seed {seed}");
    let mut rng = Rng(seed);
    let w = crate::world();
    let root = w.store();
    let sources = w.dir.path().join("hammer-src");
    fs::create_dir_all(&sources).expect("mkdir");
    for i in 0..64u64 {
        let path = sources.join(format!("f{i}"));
        fs::write(&path, text(i + 1000, 1 + (i as usize * 37) % 900)).expect("write");
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("age source");
    }
    // Out of the hash cache's racy window, so its entries are recorded and appended.
    std::thread::sleep(Duration::from_millis(2100));
    Store::open(&root, 512 * 1024).expect("create store");
    // Three kills in four land in the store and hash-cache hammer, one in four in a real
    // `llama invoke` writing its inputs, outputs and action-cache entry.
    w.write("in.txt", b"invoke input\n");
    let mut invokes = 0;
    for kill in 0..KILLS {
        let mut child = if kill % 4 == 3 {
            invokes += 1;
            w.write("in.txt", format!("invoke input {kill}\n").as_bytes());
            w.llama(&[
                "invoke",
                "-f",
                "in.txt",
                "-o",
                "out.txt",
                "fn",
                "sh",
                "-c",
                "cat in.txt in.txt > out.txt",
            ])
            .env("LLAMA_CACHE_SIZE", "512KiB")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn llama invoke")
        } else {
            start_hammer(&root)
        };
        std::thread::sleep(Duration::from_millis(5 + rng.below(90)));
        // SIGKILL: no destructor, no flush, no unlock but the kernel's.
        let _ = child.kill();
        let _ = child.wait();
    }
    let killed_in = started.elapsed();

    // Every blob hashes to its name; every record checks out and decodes.
    let store = Store::open(&root, u64::MAX).expect("reopen");
    let report = store.verify_all().expect("verify_all");
    eprintln!(
        "crash consistency: {KILLS} kills ({invokes} of llama invoke) in {killed_in:?}; {report:?}"
    );
    assert!(
        report.blobs_ok > 0 && report.records_ok > 0,
        "the children wrote nothing: {report:?}"
    );
    assert_eq!(report.blobs_removed, 0, "a kill left a damaged blob");
    assert_eq!(report.records_removed, 0, "a kill left a damaged record");
    // Every action-cache entry is whole: a hit whose blobs all verify, or a miss.
    let (mut hits, mut misses) = (0, 0);
    for entry in files_under(&root.join("ac")) {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let key = Digest::from_parts(hex32(name), 0);
        match llama_exec::cached_result(&store, &key).expect("read ac entry") {
            Some(result) => {
                hits += 1;
                let (blobs, _trees) = llama_exec::result_blobs(&result).expect("result blobs");
                for d in blobs {
                    store.verify(&d).expect("a hit's blob verifies");
                }
            }
            None => misses += 1,
        }
    }
    eprintln!("crash consistency: action cache {hits} complete, {misses} incomplete (misses)");
    // The hash cache loads, and everything it remembers is right.
    let cache = HashCache::load(root.join("hashcache"));
    for i in 0..64 {
        let path = sources.join(format!("f{i}"));
        let meta = fs::metadata(&path).expect("stat");
        let want = Digest::of_bytes(&fs::read(&path).expect("read"));
        assert_eq!(
            cache.digest(&path, &meta).expect("hash"),
            want,
            "{}",
            path.display()
        );
    }
    let (remembered, _) = cache.counts();
    assert!(remembered > 0, "no hash-cache record survived the kills");
    // Staging files the kills left behind go with the next eviction once stale.
    let staged = files_under(&root.join("tmp")).len();
    let then = SystemTime::now() - Duration::from_secs(2 * 3600);
    for f in files_under(&root.join("tmp")) {
        let _ = fs::File::options()
            .write(true)
            .open(&f)
            .and_then(|h| h.set_modified(then));
    }
    store.evict().expect("evict");
    assert!(
        files_under(&root.join("tmp")).is_empty(),
        "stale staging files stay"
    );
    eprintln!(
        "crash consistency: {staged} staging files left by kills, swept; hash cache remembered {remembered} of 64"
    );

    // A real project rebuilt through llamacc on that store is byte-identical to gcc's.
    let units = c_project(&w, 16, seed % 1000);
    reference_objects(&w, &units);
    start_daemon(&w, "512KiB");
    llamacc_all_at_once(&w, &units, "512KiB");
    llamacc_all_at_once(&w, &units, "512KiB");
    let elapsed = started.elapsed();
    eprintln!("crash consistency: total {elapsed:?}");
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
}

// ---------------------------------------------------------------------------------------
// Load

/// How many llamacc processes the load test starts at once. 64 within `cargo test`, where
/// other tests share the cores; `scripts/test` then runs it alone with 256:
/// `LLAMA_TEST_LOAD_PROCESSES=256 cargo test -p llama-cli --test tests trust_store::load`
/// (about 20 s on 2 cores).
fn load_processes() -> usize {
    std::env::var("LLAMA_TEST_LOAD_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// How many blob files the store holds, raw and compressed.
fn blob_files(store: &Path) -> usize {
    files_under(&store.join("cas")).len() + files_under(&store.join("cas-z")).len()
}

#[test]
fn load_concurrent_llamacc_on_an_evicting_store() {
    let n = load_processes();
    let started = Instant::now();
    // About two thirds of what the objects take: every write passes the limit.
    let cache = format!("{n}KiB");
    let cache = cache.as_str();
    let w = crate::world();
    let units = c_project(&w, n, 11);
    reference_objects(&w, &units);
    start_daemon(&w, cache);
    // Round 1: all misses, every write passing the limit.
    let first = llamacc_all_at_once(&w, &units, cache);
    // Round 2, "a day later": everything is old, so eviction really deletes while half the
    // compiles are hits reading those same old blobs and the other half are misses
    // writing new ones.
    age_store(&w.store(), 24 * 3600);
    let blobs_before = blob_files(&w.store());
    let changed: Vec<String> = units.iter().step_by(2).cloned().collect();
    for u in &changed {
        let path = w.path(&format!("proj/{u}"));
        let mut src = fs::read_to_string(&path).expect("read unit");
        src.push_str("int changed_later(void) { return 7; }\n");
        fs::write(&path, src).expect("write unit");
    }
    reference_objects(&w, &changed);
    let second = llamacc_all_at_once(&w, &units, cache);
    let blobs_after = blob_files(&w.store());
    let elapsed = started.elapsed();
    eprintln!(
        "load: {n} concurrent llamacc, cache {cache}: round 1 {first:?}, round 2 {second:?} \
         ({} changed); blobs {blobs_before} before round 2, {blobs_after} after; total {elapsed:?}",
        changed.len()
    );
    assert!(
        blobs_after < blobs_before + changed.len(),
        "nothing was evicted during round 2"
    );
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
}
