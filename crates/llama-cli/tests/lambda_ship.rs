//! Programs shipped to Lambda as llamacc ships gcc (`--ship`, and the command's own program
//! by default): the runtimes run chrooted into the minimal Debian root, which has neither
//! optipng nor the test's own programs, so every job that works ran what was shipped.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::lambda::Cloud;
use crate::lambda_cc::nix_root;
use llama_testkit::{World, run_with_stdin, stderr, stdout};

/// Six small PNG images (gradients: optipng has work to do), written with Python's zlib.
const MAKE_PNGS: &str = r#"
import struct, sys, zlib
def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
for n in range(6):
    w, h = 40 + 8 * n, 30 + 4 * n
    rows = b"".join(b"\0" + bytes((x * 5 + y * 3 + n * 17) % 256 for x in range(w) for _ in range(3)) for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")
    open(f"img{n}.png", "wb").write(png)
"#;

/// The original's command, with the function named `_`, the one name the emulator serves.
const OPTIPNG_XARGS: &[&str] = &[
    "xargs",
    "-logs",
    "-j",
    "16",
    "_",
    "optipng",
    "{{.I .Line}}",
    "-out",
    "{{.O (printf \"optimized/%s\" .Line)}}",
];

fn ok(what: &str, out: &Output, cloud: &Cloud) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}\n{}",
        out.status,
        stderr(out),
        cloud.logs()
    );
}

fn jailed_cloud(w: &World) -> Cloud {
    Cloud::start_jailed(
        w,
        &["usr/bin/optipng", "usr/lib/x86_64-linux-gnu/libpng16.so.16"],
    )
}

fn pngs(w: &World) -> String {
    let out = Command::new("python3")
        .args(["-c", MAKE_PNGS])
        .current_dir(w.work())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    (0..6).map(|n| format!("img{n}.png\n")).collect()
}

#[test]
fn the_originals_optipng_example_runs_shipped_on_a_function_without_optipng() {
    if !nix_root() {
        eprintln!("SKIPPED: chroot needs root (CI runs as root)");
        return;
    }
    let w = crate::world();
    let cloud = jailed_cloud(&w);
    let lines = pngs(&w);
    fs::create_dir_all(w.path("reference")).expect("mkdir");
    for n in 0..6 {
        let out = Command::new("optipng")
            .args(["-quiet", &format!("img{n}.png"), "-out"])
            .arg(format!("reference/img{n}.png"))
            .current_dir(w.work())
            .output()
            .expect("optipng (scripts/test installs it)");
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let mut cmd = w.llama(OPTIPNG_XARGS);
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("store-1"));
    let first = run_with_stdin(cmd, &lines);
    ok("xargs optipng", &first, &cloud);
    for n in 0..6 {
        let name = format!("img{n}.png");
        assert_eq!(
            fs::read(w.path(&format!("optimized/{name}"))).expect("optimized"),
            fs::read(w.path(&format!("reference/{name}"))).expect("reference"),
            "{name}: shipped optipng's output differs from optipng's here"
        );
    }
    assert_eq!(cloud.invocations(), 6, "{}", cloud.logs());

    // Another machine (a new LLAMA_DIR): every job from the S3 action cache.
    fs::remove_dir_all(w.path("optimized")).expect("rm");
    let mut cmd = w.llama(OPTIPNG_XARGS);
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("store-2"));
    let second = run_with_stdin(cmd, &lines);
    ok("xargs optipng again", &second, &cloud);
    let err = stderr(&second);
    assert!(
        err.contains("lambda: 0 invocations, ") && err.contains("6 from the S3 action cache"),
        "{err}"
    );
    assert_eq!(cloud.invocations(), 6, "{}", cloud.logs());
    assert!(w.path("optimized/img5.png").is_file());

    // A script: sh is shipped as the command's program, optipng by --ship, and the script
    // finds it on PATH; sha256sum is the root's own.
    let mut cmd = w.llama(&[
        "invoke",
        "--ship",
        "optipng",
        "-f",
        "img0.png",
        "-o",
        "sum",
        "_",
        "sh",
        "-c",
        "optipng -quiet img0.png -out small.png && sha256sum small.png > sum",
    ]);
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("store-1"));
    let script = cmd.output().expect("invoke");
    ok("sh -c with a shipped optipng", &script, &cloud);
    let hash = Command::new("sha256sum")
        .arg("reference/img0.png")
        .current_dir(w.work())
        .output()
        .expect("sha256sum");
    let hash = stdout(&hash);
    let reference_sum = format!("{}  small.png\n", hash.split(' ').next().unwrap_or(""));
    assert_eq!(
        fs::read_to_string(w.path("sum")).expect("sum"),
        reference_sum
    );
}

/// `prog` built from `message`, linked with `libgreet.so` found through `$ORIGIN/../lib`
/// (a RUNPATH), in `dir/bin` and `dir/lib`.
fn runpath_program(dir: &Path, message: &str) {
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::create_dir_all(dir.join("lib")).expect("mkdir");
    fs::write(
        dir.join("greet.c"),
        format!(
            "#include <stdio.h>\nvoid greet(const char *w) {{ printf(\"{message}, %s\\n\", w); }}\n"
        ),
    )
    .expect("write");
    fs::write(
        dir.join("main.c"),
        "void greet(const char *);\nint main(int c, char **v) { greet(c > 1 ? v[1] : \"nobody\"); return 0; }\n",
    )
    .expect("write");
    for args in [
        vec!["-shared", "-fPIC", "greet.c", "-o", "lib/libgreet.so"],
        vec![
            "main.c",
            "-Llib",
            "-lgreet",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
            "-o",
            "bin/greet",
        ],
    ] {
        let out = Command::new("gcc")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("gcc");
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn a_runpath_program_ships_with_its_library_and_an_upgrade_runs_again() {
    if !nix_root() {
        eprintln!("SKIPPED: chroot needs root (CI runs as root)");
        return;
    }
    let w = crate::world();
    let cloud = jailed_cloud(&w);
    let tool = w.dir.path().join("tool");
    let greet = tool.join("bin/greet");
    let run = |cloud: &Cloud| {
        let mut cmd = w.llama(&["invoke", "_", greet.to_str().unwrap(), "lambda"]);
        cloud.client(&mut cmd);
        cmd.env("LLAMA_DIR", w.dir.path().join("store"));
        let out = cmd.output().expect("invoke");
        ok("invoke greet", &out, cloud);
        stdout(&out)
    };
    runpath_program(&tool, "hello");
    assert_eq!(run(&cloud), "hello, lambda\n");
    assert_eq!(cloud.invocations(), 1);
    assert_eq!(run(&cloud), "hello, lambda\n");
    assert_eq!(cloud.invocations(), 1, "the same program: a cache hit");
    // Upgraded here: the library changes, and with it the action.
    runpath_program(&tool, "goodbye");
    assert_eq!(run(&cloud), "goodbye, lambda\n");
    assert_eq!(cloud.invocations(), 2, "{}", cloud.logs());
}

#[test]
fn a_program_for_another_machine_is_refused_before_anything_runs() {
    let w = crate::world();
    let mut bytes = fs::read("/bin/true").expect("/bin/true");
    // e_machine: arm64.
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    w.write("arm-tool", &bytes);
    let out = w
        .llama(&["invoke", "--ship", "./arm-tool", "fn", "./arm-tool"])
        .output()
        .expect("invoke");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--ship ./arm-tool") && err.contains("arm64") && err.contains("x86-64"),
        "{err}"
    );
}
