//! Which compiler a `llamacc` process stands in for, from how it was started:
//!
//! - as `llamacc ARGS` / `llamac++ ARGS`: the compiler `LLAMACC_LOCAL_CC` /
//!   `LLAMACC_LOCAL_CXX` names (the original's way);
//! - as a launcher, `llamacc COMPILER ARGS` (ccache's and sccache's way; what CMake runs for
//!   `CMAKE_<LANG>_COMPILER_LAUNCHER=llamacc`, and Meson for `CC="llamacc cc"`): the first
//!   argument, when it names a compiler of the gcc or clang family;
//! - through a link named like a compiler (`gcc -> llamacc`, ccache's masquerade): the next
//!   program of that name on `PATH`, skipping llamacc itself.
//!
//! The compiler found is handed to the daemon by absolute path, so the daemon never has to
//! tell a masquerading link from the real compiler; where it resolves a name itself
//! ([`find_compiler`]) it skips llamacc the same way.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The compilers llamacc recognises by name, after a target prefix
/// (`x86_64-linux-gnu-`) and a version suffix (`-12`, `-14.0`) are taken off, and whether
/// each is a C++ driver.
const COMPILER_NAMES: &[(&str, bool)] = &[
    ("c++", true),
    ("cc", false),
    ("clang", false),
    ("clang++", true),
    ("g++", true),
    ("gcc", false),
];

/// What `--version` prints for a compiler of a family llamacc knows, for compilers whose
/// name says nothing (`/opt/cross/bin/xcc`).
const VERSION_MARKS: &[&str] = &["Free Software Foundation", "clang version"];

/// How this llamacc was invoked, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The compiler to run, by absolute path: named by the launcher form or found behind a
    /// masquerading link. `None`: the one the `LLAMACC_LOCAL_*` settings name.
    pub compiler: Option<PathBuf>,
    /// A C++ driver: `llamac++`, or a compiler named like one.
    pub cxx: bool,
    /// The compiler's arguments.
    pub args: Vec<OsString>,
}

/// Why no compiler can be found for a masquerading llamacc.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "llamacc was run as {name}, but no other {name} is on PATH; put the directory holding the real {name} on PATH after the one holding this link"
)]
pub struct NoRealCompiler {
    /// The name it was run as.
    pub name: String,
}

/// Where and what llamacc is: the process's own executable, to be skipped when a name is
/// looked up.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// `PATH` of the caller; `None` is execvp's default.
    pub path: Option<&'a OsStr>,
    /// The caller's working directory, for relative paths.
    pub cwd: &'a Path,
    /// This executable's device and inode (`/proc/self/exe`), if known.
    pub this: Option<(u64, u64)>,
}

impl Context<'_> {
    /// True for the llamacc binary itself, under any name: this very file, or any file whose
    /// real name (links followed) starts with `llamac`.
    pub fn is_llamacc(&self, candidate: &Path) -> bool {
        if let (Some(this), Ok(meta)) = (self.this, fs::metadata(candidate))
            && (meta.dev(), meta.ino()) == this
        {
            return true;
        }
        fs::canonicalize(candidate).is_ok_and(|real| {
            real.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"llamac"))
        })
    }
}

/// The device and inode of the running executable.
pub fn this_executable() -> Option<(u64, u64)> {
    fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Whether `name` (a file name) is a compiler llamacc knows, and if so whether it drives
/// C++: `gcc`, `g++-12`, `x86_64-linux-gnu-gcc-12`, `clang++-14`, `cc`, `c++`.
pub fn compiler_kind(name: &str) -> Option<bool> {
    let base = strip_version(name);
    COMPILER_NAMES.iter().find_map(|&(known, cxx)| {
        let prefixed = base
            .strip_suffix(known)
            .is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('-'));
        prefixed.then_some(cxx)
    })
}

/// `gcc-12` → `gcc`, `clang-14.0` → `clang`; a name without a numeric suffix is itself.
fn strip_version(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, version))
            if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            base
        }
        _ => name,
    }
}

/// Resolves `program` as a shell would (a path with a slash relative to `cwd`, a bare name
/// in each `PATH` directory in turn), skipping every llamacc: the real compiler behind a
/// masquerading link, wherever the link's directory sits on `PATH`.
pub fn find_compiler(program: &OsStr, ctx: &Context<'_>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        let p = ctx.cwd.join(program);
        return is_executable(&p).then_some(p);
    }
    let search = ctx.path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    std::env::split_paths(search)
        .map(|dir| ctx.cwd.join(dir).join(program))
        .find(|candidate| is_executable(candidate) && !ctx.is_llamacc(candidate))
}

/// Why [`real_compiler`] found nothing to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotACompiler {
    /// Nothing of that name.
    #[error("command not found")]
    NotFound,
    /// Only llamacc under that name: running it would start llamacc again, for ever.
    #[error(
        "it is llamacc itself, not a compiler; set LLAMACC_LOCAL_CC / LLAMACC_LOCAL_CXX to the real compiler"
    )]
    Llamacc,
}

/// The program to run for `program` when llamacc runs the compiler directly: as
/// [`find_compiler`], and never llamacc itself.
pub fn real_compiler(program: &OsStr, ctx: &Context<'_>) -> Result<PathBuf, NotACompiler> {
    match find_compiler(program, ctx) {
        Some(p) if ctx.is_llamacc(&p) => Err(NotACompiler::Llamacc),
        Some(p) => Ok(p),
        None if program.as_bytes().contains(&b'/') => Err(NotACompiler::NotFound),
        // Only links to llamacc answer to that name.
        None => {
            let search = ctx.path.unwrap_or(OsStr::new("/bin:/usr/bin"));
            let any = std::env::split_paths(search)
                .any(|dir| is_executable(&ctx.cwd.join(dir).join(program)));
            Err(if any {
                NotACompiler::Llamacc
            } else {
                NotACompiler::NotFound
            })
        }
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolves how llamacc was started: `argv0` as it was run, `args` after it.
pub fn resolve(
    argv0: &OsStr,
    mut args: Vec<OsString>,
    ctx: &Context<'_>,
) -> Result<Invocation, NoRealCompiler> {
    let name = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.starts_with("llamac")
        && let Some(cxx) = compiler_kind(&name)
    {
        let compiler = find_compiler(OsStr::new(&name), ctx).ok_or(NoRealCompiler { name })?;
        return Ok(Invocation {
            compiler: Some(compiler),
            cxx,
            args,
        });
    }
    let mut cxx = name.contains("++") || name.contains("cxx");
    let mut compiler = None;
    // `llamacc llamacc gcc ...` (a launcher in front of llamacc as the compiler) is as if
    // the inner llamacc were not there.
    while let Some(first) = args.first() {
        match launched_compiler(first, ctx) {
            Launched::No => break,
            Launched::Llamacc => {
                args.remove(0);
            }
            Launched::Compiler(path, kind) => {
                cxx = kind.unwrap_or(cxx);
                compiler = Some(path);
                args.remove(0);
                break;
            }
        }
    }
    Ok(Invocation {
        compiler,
        cxx,
        args,
    })
}

/// What a first argument is.
enum Launched {
    /// An argument for the compiler (a flag, a source, an object).
    No,
    /// llamacc again.
    Llamacc,
    /// A compiler, and whether its name says it drives C++.
    Compiler(PathBuf, Option<bool>),
}

/// Whether `first` names a compiler: a flag or a file with an extension never does; a
/// known compiler name does when it resolves; another executable does when its
/// `--version` says it is gcc or clang.
fn launched_compiler(first: &OsStr, ctx: &Context<'_>) -> Launched {
    let bytes = first.as_bytes();
    if bytes.is_empty() || bytes[0] == b'-' || bytes[0] == b'@' {
        return Launched::No;
    }
    let file_name = Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let by_name = compiler_kind(&file_name);
    if by_name.is_none() && file_name.contains('.') && !file_name.starts_with("llamac") {
        // x.c, x.o, libfoo.a: an operand.
        return Launched::No;
    }
    let resolved = if bytes.contains(&b'/') {
        let p = ctx.cwd.join(first);
        is_executable(&p).then_some(p)
    } else if by_name.is_some() {
        // A bare name is a program only if it is on PATH; `llamacc gcc` behind a `gcc` link
        // to llamacc means the real gcc.
        find_compiler(first, ctx)
    } else if file_name.starts_with("llamac") {
        std::env::split_paths(ctx.path.unwrap_or(OsStr::new("/bin:/usr/bin")))
            .map(|dir| ctx.cwd.join(dir).join(first))
            .find(|c| is_executable(c))
    } else {
        // A bare word that is not a compiler's name is an operand (`llamacc main -o x`
        // links a file called main); asking it would run whatever is on PATH.
        None
    };
    let Some(path) = resolved else {
        return Launched::No;
    };
    if ctx.is_llamacc(&path) {
        return Launched::Llamacc;
    }
    match by_name {
        Some(kind) => Launched::Compiler(path, Some(kind)),
        None if says_it_is_a_compiler(&path) => Launched::Compiler(path, None),
        None => Launched::No,
    }
}

/// Asks an executable named by path whether it is gcc or clang.
fn says_it_is_a_compiler(path: &Path) -> bool {
    let Ok(out) = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && VERSION_MARKS.iter().any(|mark| text.contains(mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn compiler_names_are_recognised_with_prefixes_and_versions() {
        let cases = [
            ("gcc", Some(false)),
            ("g++", Some(true)),
            ("cc", Some(false)),
            ("c++", Some(true)),
            ("clang", Some(false)),
            ("clang++-14", Some(true)),
            ("gcc-12", Some(false)),
            ("x86_64-linux-gnu-gcc-12", Some(false)),
            ("x86_64-linux-gnu-g++", Some(true)),
            ("gcc-ar", None),
            ("c++filt", None),
            ("cc1", None),
            ("lcc", None),
            ("main", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(compiler_kind(name), want, "{name}");
        }
    }

    fn exe(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A PATH of two directories: `fake/` with `gcc` and `cc` linked to a file named
    /// `llamacc`, then `real/` with the real ones.
    struct World {
        dir: tempfile::TempDir,
        path: OsString,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let (fake, real) = (dir.path().join("fake"), dir.path().join("real"));
            fs::create_dir_all(&fake).unwrap();
            fs::create_dir_all(&real).unwrap();
            exe(&dir.path().join("llamacc"), "#!/bin/sh\n");
            for name in ["gcc", "cc", "g++"] {
                symlink(dir.path().join("llamacc"), fake.join(name)).unwrap();
                exe(&real.join(name), "#!/bin/sh\n");
            }
            exe(
                &real.join("xcc"),
                "#!/bin/sh\necho 'xcc (GCC) 12.2.0'; echo 'Copyright (C) 2022 Free Software Foundation, Inc.'\n",
            );
            exe(&real.join("main"), "#!/bin/sh\n");
            let path = std::env::join_paths([&fake, &real]).unwrap();
            World { dir, path }
        }

        fn ctx(&self) -> Context<'_> {
            Context {
                path: Some(&self.path),
                cwd: self.dir.path(),
                this: None,
            }
        }

        fn real(&self, name: &str) -> PathBuf {
            self.dir.path().join("real").join(name)
        }
    }

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn a_link_named_like_a_compiler_finds_the_real_one_further_down_path() {
        let w = World::new();
        let inv = resolve(OsStr::new("/x/fake/g++"), words("-c a.cc"), &w.ctx()).unwrap();
        assert_eq!(inv.compiler, Some(w.real("g++")));
        assert!(inv.cxx);
        assert_eq!(inv.args, words("-c a.cc"));
        let only_fake = w.dir.path().join("fake");
        let ctx = Context {
            path: Some(only_fake.as_os_str()),
            ..w.ctx()
        };
        let err = resolve(OsStr::new("gcc"), words("-c a.c"), &ctx).unwrap_err();
        assert!(err.to_string().contains("no other gcc is on PATH"), "{err}");
    }

    #[test]
    fn the_launcher_form_takes_the_first_argument_as_the_compiler() {
        let w = World::new();
        let real_cc = w.real("cc");
        // (arguments, compiler found, C++, arguments left for it)
        type Case = (Vec<OsString>, Option<PathBuf>, bool, Vec<OsString>);
        let cases: Vec<Case> = vec![
            // CMake's launcher: an absolute compiler path.
            (
                [vec![real_cc.clone().into()], words("-c a.c -o a.o")].concat(),
                Some(real_cc.clone()),
                false,
                words("-c a.c -o a.o"),
            ),
            // A bare name whose first PATH entry is a link to llamacc: the real one.
            (
                words("g++ -c a.cc"),
                Some(w.real("g++")),
                true,
                words("-c a.cc"),
            ),
            // Recognised by asking it.
            (
                [vec![w.real("xcc").into()], words("-c a.c")].concat(),
                Some(w.real("xcc")),
                false,
                words("-c a.c"),
            ),
            // Operands, not compilers.
            (words("-c a.c"), None, false, words("-c a.c")),
            (words("a.c -o a"), None, false, words("a.c -o a")),
            (words("main -o prog"), None, false, words("main -o prog")),
            (words("gcc.c -c"), None, false, words("gcc.c -c")),
        ];
        for (args, compiler, cxx, rest) in cases {
            let inv = resolve(OsStr::new("llamacc"), args.clone(), &w.ctx()).unwrap();
            assert_eq!(inv.compiler, compiler, "{args:?}");
            assert_eq!(inv.cxx, cxx, "{args:?}");
            assert_eq!(inv.args, rest, "{args:?}");
        }
    }

    #[test]
    fn llamacc_named_as_its_own_compiler_is_skipped() {
        let w = World::new();
        let llamacc = w.dir.path().join("llamacc");
        let args = [vec![llamacc.into()], words("gcc -c a.c")].concat();
        let inv = resolve(OsStr::new("llamac++"), args, &w.ctx()).unwrap();
        assert_eq!(inv.compiler, Some(w.real("gcc")));
        assert!(!inv.cxx, "gcc drives C whatever llamacc was called");
        let inv = resolve(OsStr::new("llamac++"), words("-c a.cc"), &w.ctx()).unwrap();
        assert_eq!((inv.compiler, inv.cxx), (None, true));
    }

    #[test]
    fn find_compiler_skips_links_to_llamacc() {
        let w = World::new();
        assert_eq!(
            find_compiler(OsStr::new("cc"), &w.ctx()),
            Some(w.real("cc"))
        );
        assert_eq!(find_compiler(OsStr::new("absent"), &w.ctx()), None);
    }

    #[test]
    fn llamacc_is_never_the_compiler_run_directly() {
        let w = World::new();
        let ctx = w.ctx();
        assert_eq!(real_compiler(OsStr::new("gcc"), &ctx), Ok(w.real("gcc")));
        let llamacc = w.dir.path().join("llamacc");
        assert_eq!(
            real_compiler(llamacc.as_os_str(), &ctx),
            Err(NotACompiler::Llamacc)
        );
        let only_fake = w.dir.path().join("fake");
        let ctx = Context {
            path: Some(only_fake.as_os_str()),
            ..w.ctx()
        };
        assert_eq!(
            real_compiler(OsStr::new("cc"), &ctx),
            Err(NotACompiler::Llamacc)
        );
        assert_eq!(
            real_compiler(OsStr::new("absent"), &ctx),
            Err(NotACompiler::NotFound)
        );
    }
}
