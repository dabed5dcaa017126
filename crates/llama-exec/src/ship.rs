//! A local program as input files, for a machine that does not have it.
//!
//! What `ld.so` would load for a dynamically linked program — the program, the shared
//! libraries of its `DT_NEEDED` closure as this machine's loader resolves them (`RUNPATH`,
//! `RPATH`, `$ORIGIN`, the system's search path), and the loader itself — becomes content-
//! addressed inputs, and the program runs remotely through the shipped loader
//! (`--inhibit-cache --library-path`), so neither the remote C library nor anything else
//! installed there matters. A statically linked program ships alone. Libraries a program
//! opens with `dlopen` are not in its `DT_NEEDED` closure and cannot be seen: they, and
//! data files a program reads at fixed paths, are shipped with `-f`.
//!
//! llamacc ships the compiler this way; `llama invoke` and `llama xargs` ship the programs
//! their commands run.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

use crate::process::{HostCommand, run_host};

/// The dynamic loader of x86-64 Linux: every dynamically linked program here names it.
pub const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// The machine whose programs can be shipped: the loader shipped with them is this one's.
const MACHINE: (u16, &str) = (elf::EM_X86_64, "x86-64");

/// ELF machines by name, for messages about a program built for another.
const MACHINES: &[(u16, &str)] = &[
    (elf::EM_386, "i386"),
    (elf::EM_ARM, "32-bit ARM"),
    (elf::EM_X86_64, "x86-64"),
    (elf::EM_AARCH64, "arm64 (aarch64)"),
    (elf::EM_RISCV, "RISC-V"),
    (elf::EM_PPC64, "POWER"),
    (elf::EM_S390, "s390x"),
];

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a program cannot be shipped.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Not on `PATH` (or not at the path given).
    #[error("{0}: not found on PATH, so it cannot be shipped; install it here, or give its path")]
    NotFound(String),
    /// Not readable.
    #[error("{path}: cannot read it to ship it: {error}")]
    Unreadable {
        /// The program.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Neither ELF nor a script.
    #[error(
        "{0}: neither an ELF program nor a script with #!, so it cannot be shipped; ship what it needs with -f"
    )]
    NotAProgram(PathBuf),
    /// Built for another machine.
    #[error(
        "{path} is a program for {found}, but the function runs {wanted} programs (the loader shipped with it is this machine's); run a {wanted} build of it"
    )]
    WrongMachine {
        /// The program.
        path: PathBuf,
        /// What it is built for.
        found: String,
        /// What the function runs.
        wanted: &'static str,
    },
    /// The loader could not list (or find) its libraries.
    #[error("{path}: {message}")]
    Libraries {
        /// The program.
        path: PathBuf,
        /// What the loader said.
        message: String,
    },
}

/// One file shipped: read here at `local`, laid out remotely at `local`'s own absolute
/// path below a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFile {
    /// The absolute path here, which is also its path below the remote root.
    pub local: PathBuf,
    /// Whether it is run (not only loaded or read).
    pub executable: bool,
}

/// How a shipped program is started remotely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Statically linked: run as it is.
    Direct,
    /// Through the shipped loader, with the shipped libraries' directories, in the order
    /// the loader found them.
    Loader {
        /// The directories of the shipped libraries.
        library_dirs: Vec<PathBuf>,
    },
    /// A script: its interpreter (shipped as a program of its own, by its name) runs it,
    /// with the shebang's argument if it has one.
    Script {
        /// The interpreter.
        interpreter: Box<Program>,
        /// The shebang line's optional argument (`#!/bin/sh -e`: `-e`).
        argument: Option<String>,
    },
}

/// A program with everything it needs to start where it is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The name the command calls it by (`optipng`).
    pub name: String,
    /// Where it is here.
    pub path: PathBuf,
    /// How it starts.
    pub start: Start,
    /// Every file shipped for it: the program, its libraries and the loader (or, for a
    /// script, the script and its interpreter's files).
    pub files: Vec<ShippedFile>,
}

impl Program {
    /// Finds `name` (a bare name on `path_env`, or a path relative to `cwd`) and what it
    /// needs. `env` is the environment the loader is asked in (its `LD_LIBRARY_PATH` and
    /// `LD_PRELOAD` are left out: the remote side does not have them).
    pub async fn find(
        name: &str,
        path_env: Option<&std::ffi::OsStr>,
        cwd: &Path,
        env: &[(OsString, OsString)],
    ) -> Result<Program, ShipError> {
        let path = crate::find_program(name.as_ref(), path_env, cwd)
            .ok_or_else(|| ShipError::NotFound(name.to_string()))?;
        let path = std::path::absolute(&path).unwrap_or(path);
        Box::pin(Program::at(name, &path, path_env, cwd, env, 0)).await
    }

    async fn at(
        name: &str,
        path: &Path,
        path_env: Option<&std::ffi::OsStr>,
        cwd: &Path,
        env: &[(OsString, OsString)],
        depth: usize,
    ) -> Result<Program, ShipError> {
        let unreadable = |error| ShipError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let head = read_head(path).map_err(unreadable)?;
        if let Some(shebang) = head.strip_prefix(b"#!") {
            // A script's interpreter may itself be a script, once (as the kernel allows).
            if depth > 1 {
                return Err(ShipError::NotAProgram(path.to_path_buf()));
            }
            let (interpreter, argument) =
                parse_shebang(shebang).ok_or_else(|| ShipError::NotAProgram(path.to_path_buf()))?;
            let via_env = interpreter.ends_with("/env") && argument.is_some();
            let (interpreter, argument) = if via_env {
                // `#!/usr/bin/env NAME`: NAME as found on PATH, with no argument.
                let found = argument.unwrap_or_default();
                let path = crate::find_program(found.as_ref(), path_env, cwd)
                    .ok_or_else(|| ShipError::NotFound(found.clone()))?;
                let program =
                    Box::pin(Program::at(&found, &path, path_env, cwd, env, depth + 1)).await?;
                (program, None)
            } else {
                let named = Path::new(&interpreter);
                let base = named
                    .file_name()
                    .map_or(interpreter.clone(), |b| b.to_string_lossy().into_owned());
                let program =
                    Box::pin(Program::at(&base, named, path_env, cwd, env, depth + 1)).await?;
                (program, argument)
            };
            let mut files = vec![ShippedFile {
                local: path.to_path_buf(),
                executable: true,
            }];
            files.extend(interpreter.files.iter().cloned());
            return Ok(Program {
                name: name.to_string(),
                path: path.to_path_buf(),
                start: Start::Script {
                    interpreter: Box::new(interpreter),
                    argument,
                },
                files,
            });
        }
        let elf = read_elf(path).map_err(unreadable)?;
        let Some(elf) = elf else {
            return Err(ShipError::NotAProgram(path.to_path_buf()));
        };
        if elf.machine != MACHINE.0 {
            return Err(ShipError::WrongMachine {
                path: path.to_path_buf(),
                found: machine_name(elf.machine),
                wanted: MACHINE.1,
            });
        }
        let mut files = vec![ShippedFile {
            local: path.to_path_buf(),
            executable: true,
        }];
        if !elf.dynamic {
            return Ok(Program {
                name: name.to_string(),
                path: path.to_path_buf(),
                start: Start::Direct,
                files,
            });
        }
        let libraries =
            shared_libraries(path, env)
                .await
                .map_err(|message| ShipError::Libraries {
                    path: path.to_path_buf(),
                    message,
                })?;
        let mut library_dirs: Vec<PathBuf> = Vec::new();
        for lib in libraries {
            // The loader prints what it opened, `$ORIGIN/../lib` unresolved: the directory
            // resolved, the file kept by the name the loader looks for.
            let lib = match (lib.parent().map(std::fs::canonicalize), lib.file_name()) {
                (Some(Ok(dir)), Some(name)) => dir.join(name),
                _ => lib,
            };
            if let Some(dir) = lib.parent()
                && !library_dirs.iter().any(|d| d == dir)
            {
                library_dirs.push(dir.to_path_buf());
            }
            files.push(ShippedFile {
                local: lib,
                executable: false,
            });
        }
        files.push(ShippedFile {
            local: LOADER.into(),
            executable: true,
        });
        Ok(Program {
            name: name.to_string(),
            path: path.to_path_buf(),
            start: Start::Loader { library_dirs },
            files,
        })
    }

    /// A `/bin/sh` script that starts this program from below the root `$r` (the script
    /// sets `r` first): the words of its command, `"$@"` last.
    pub fn launch_words(&self) -> String {
        let under = |p: &Path| format!("\"$r\"{}", sh_quote(&p.to_string_lossy()));
        match &self.start {
            Start::Direct => under(&self.path),
            Start::Loader { library_dirs } => {
                // One word: "$r"'/lib/a':"$r"'/usr/lib/b'.
                let dirs = library_dirs
                    .iter()
                    .map(|d| under(d))
                    .collect::<Vec<_>>()
                    .join(":");
                format!(
                    "{} --inhibit-cache --library-path {dirs} --argv0 {} {}",
                    under(Path::new(LOADER)),
                    sh_quote(&self.name),
                    under(&self.path)
                )
            }
            Start::Script {
                interpreter,
                argument,
            } => {
                let mut words = interpreter.launch_words();
                if let Some(a) = argument {
                    words.push(' ');
                    words.push_str(&sh_quote(a));
                }
                words.push(' ');
                words.push_str(&under(&self.path));
                words
            }
        }
    }
}

/// What the ELF header says: the machine, and whether it names a loader (`PT_INTERP`).
struct ElfFacts {
    machine: u16,
    dynamic: bool,
}

/// The first bytes of `path`, enough for a shebang line or an ELF identification.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(256);
    File::open(path)?.take(256).read_to_end(&mut head)?;
    Ok(head)
}

/// The ELF facts of `path`, `None` when it is not an ELF file.
fn read_elf(path: &Path) -> std::io::Result<Option<ElfFacts>> {
    let cache = object::ReadCache::new(File::open(path)?);
    let data = &cache;
    Ok(match object::FileKind::parse(data) {
        Ok(object::FileKind::Elf64) => elf_facts::<elf::FileHeader64<object::Endianness>, _>(data),
        Ok(object::FileKind::Elf32) => elf_facts::<elf::FileHeader32<object::Endianness>, _>(data),
        _ => None,
    })
}

fn elf_facts<'data, H, R>(data: R) -> Option<ElfFacts>
where
    H: FileHeader<Endian = object::Endianness>,
    R: object::ReadRef<'data>,
{
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let dynamic = header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .any(|h| h.p_type(endian) == elf::PT_INTERP);
    Some(ElfFacts {
        machine: header.e_machine(endian),
        dynamic,
    })
}

fn machine_name(machine: u16) -> String {
    MACHINES
        .iter()
        .find(|(m, _)| *m == machine)
        .map_or_else(|| format!("ELF machine {machine}"), |(_, n)| n.to_string())
}

/// `#!INTERPRETER [ARGUMENT]`, as the kernel reads it: one optional argument, the rest of
/// the line.
fn parse_shebang(rest: &[u8]) -> Option<(String, Option<String>)> {
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    let (interpreter, argument) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim().to_string()).filter(|a| !a.is_empty())),
        None => (line, None),
    };
    (interpreter.starts_with('/')).then(|| (interpreter.to_string(), argument))
}

/// `word` quoted for `/bin/sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The shared libraries `program` loads, as the loader resolves them here.
pub async fn shared_libraries(
    program: &Path,
    env: &[(OsString, OsString)],
) -> Result<Vec<PathBuf>, String> {
    let out = run_host(
        &HostCommand {
            program: LOADER.into(),
            args: vec!["--list".into(), program.as_os_str().to_owned()],
            cwd: PathBuf::from("/"),
            env: env
                .iter()
                .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "LD_PRELOAD")
                .cloned()
                .collect(),
            umask: None,
        },
        PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| format!("cannot list the libraries of {}: {e}", program.display()))?;
    if !out.termination.success() {
        return Err(format!(
            "{} is not a dynamically linked program the loader can list ({})",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_list(&String::from_utf8_lossy(&out.stdout))
}

/// Reads `ld.so --list` output: `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`.
/// The loader's own line and the kernel's vDSO name no file to ship.
fn parse_list(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, rest)) = line.split_once(" => ") else {
            continue;
        };
        let path = rest.split(" (").next().unwrap_or_default().trim();
        if path == "not found" || path.is_empty() {
            return Err(format!("library {name} was not found by the loader"));
        }
        libs.push(PathBuf::from(path));
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_listing_names_each_library_file() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f00)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f01)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
        assert_eq!(
            parse_list(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
            ]
        );
        assert!(parse_list("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn shebangs_read_as_the_kernel_reads_them() {
        assert_eq!(
            parse_shebang(b"/bin/sh\necho"),
            Some(("/bin/sh".into(), None))
        );
        assert_eq!(
            parse_shebang(b"/bin/sh -e -u\n"),
            Some(("/bin/sh".into(), Some("-e -u".into())))
        );
        assert_eq!(
            parse_shebang(b" /usr/bin/env python3\n"),
            Some(("/usr/bin/env".into(), Some("python3".into())))
        );
        assert_eq!(parse_shebang(b"sh\n"), None);
    }

    #[tokio::test]
    async fn a_dynamic_program_ships_with_its_libraries_and_the_loader() {
        let cwd = std::env::current_dir().unwrap();
        let p = Program::find("sh", Some("/usr/bin:/bin".as_ref()), &cwd, &[])
            .await
            .unwrap();
        let Start::Loader { library_dirs } = &p.start else {
            panic!("{p:?}");
        };
        assert!(!library_dirs.is_empty());
        let locals: Vec<&Path> = p.files.iter().map(|f| f.local.as_path()).collect();
        assert!(locals.contains(&Path::new(LOADER)), "{locals:?}");
        assert!(
            locals
                .iter()
                .any(|l| l.to_string_lossy().contains("libc.so")),
            "{locals:?}"
        );
        let words = p.launch_words();
        assert!(
            words.starts_with("\"$r\"'/lib64/ld-linux-x86-64.so.2' --inhibit-cache"),
            "{words}"
        );
        assert!(words.contains("--argv0 'sh'"), "{words}");
    }

    #[tokio::test]
    async fn a_program_for_another_machine_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read("/bin/true").unwrap();
        bytes[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
        let path = dir.path().join("arm-tool");
        std::fs::write(&path, bytes).unwrap();
        let err = Program::find(path.to_str().unwrap(), None, dir.path(), &[])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("arm64") && text.contains("x86-64"), "{text}");
    }

    #[tokio::test]
    async fn a_script_ships_with_its_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "#!/bin/sh -e\necho hi\n").unwrap();
        let p = Program::find("./tool", None, dir.path(), &[])
            .await
            .unwrap();
        let Start::Script {
            interpreter,
            argument,
        } = &p.start
        else {
            panic!("{p:?}");
        };
        assert_eq!(argument.as_deref(), Some("-e"));
        assert!(matches!(interpreter.start, Start::Loader { .. }));
        assert_eq!(p.files[0].local, std::path::absolute(&path).unwrap());
        let words = p.launch_words();
        assert!(
            words.ends_with(&format!(" '-e' \"$r\"'{}'", path.display())),
            "{words}"
        );
    }
}
