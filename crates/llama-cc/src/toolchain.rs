//! The compiler as input files, for a machine that has no compiler.
//!
//! A remote compile ships the driver, the programs it runs for this language (gcc's `cc1`
//! or `cc1plus`, and `as`; clang compiles C and C++ in its own process), the shared
//! libraries they load and the dynamic loader itself, so the remote compiler is this
//! machine's by construction and one generic image serves every user. Everything runs
//! through the shipped loader (`ld.so --library-path`), gcc's children too (`-wrapper`), so
//! neither the remote C library nor its version matters. What each driver is told to find
//! its own parts below the root is [`FindsItself`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use llama_exec::ship::{LOADER, shared_libraries};
use llama_exec::{HostCommand, run_host};

use crate::compilation::{Family, Language};
use crate::identity::Identity;
use crate::remote_args::ROOT_PLACEHOLDER;

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One file of the toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolFile {
    /// Where it lands, below the remote root.
    pub remote: PathBuf,
    /// The file read here.
    pub local: PathBuf,
    /// Whether it is run (not only loaded).
    pub executable: bool,
}

/// What a remote compile needs of the compiler.
#[derive(Debug, Clone)]
pub(crate) struct Toolchain {
    /// Every file shipped.
    pub files: Vec<ToolFile>,
    /// The driver, as run remotely.
    pub driver: PathBuf,
    /// The shipped loader.
    pub loader: PathBuf,
    /// The directories of the shipped libraries, in the order the loader found them.
    pub library_dirs: Vec<PathBuf>,
    /// What the driver is told so that it finds its parts under the root.
    pub finds_itself: FindsItself,
}

/// How a shipped driver is made to find its own parts below the root.
#[derive(Debug, Clone)]
pub(crate) enum FindsItself {
    /// gcc runs its programs through the loader (`-wrapper`) and finds them by its own
    /// path, which the loader passes on.
    Gcc,
    /// clang finds its headers and gcc's installation from its own path, which it would
    /// read from `/proc/self/exe` (the loader): told instead, with the local spellings.
    Clang {
        /// `-print-resource-dir`.
        resource_dir: PathBuf,
        /// The prefix of the gcc installation clang selected (`--gcc-toolchain`).
        gcc_toolchain: Option<PathBuf>,
    },
}

impl Toolchain {
    /// The command that starts the shipped driver remotely, paths under the root
    /// placeholder: the loader, with the libraries' directories, running the driver, which
    /// runs each of its programs the same way.
    pub fn command_prefix(&self) -> Vec<String> {
        let under_root = |p: &Path| format!("{ROOT_PLACEHOLDER}{}", p.display());
        let library_path = self
            .library_dirs
            .iter()
            .map(|d| under_root(d))
            .collect::<Vec<_>>()
            .join(":");
        let loader = under_root(&self.loader);
        // `--inhibit-cache`: the remote system's /etc/ld.so.cache names its libraries, not
        // ours.
        let mut prefix = vec![
            loader.clone(),
            "--inhibit-cache".into(),
            "--library-path".into(),
            library_path.clone(),
            under_root(&self.driver),
        ];
        match &self.finds_itself {
            FindsItself::Gcc => prefix.extend([
                "-wrapper".into(),
                format!("{loader},--inhibit-cache,--library-path,{library_path}"),
            ]),
            FindsItself::Clang {
                resource_dir,
                gcc_toolchain,
            } => {
                // `-no-canonical-prefixes`: the driver's own path is its argv[0], as the
                // loader passes it, not the loader's.
                prefix.extend([
                    "-no-canonical-prefixes".into(),
                    format!("-resource-dir={}", under_root(resource_dir)),
                ]);
                prefix.extend(
                    gcc_toolchain
                        .iter()
                        .map(|p| format!("--gcc-toolchain={}", under_root(p))),
                );
            }
        }
        // The two maps rather than one `-ffile-prefix-map`: gcc lets any
        // `-ffile-prefix-map` beat every `-fmacro-prefix-map` for `__FILE__`, which would
        // override a user's own `-fmacro-prefix-map`.
        prefix.extend([
            format!("--sysroot={ROOT_PLACEHOLDER}"),
            format!("-fdebug-prefix-map={ROOT_PLACEHOLDER}="),
            format!("-fmacro-prefix-map={ROOT_PLACEHOLDER}="),
        ]);
        prefix
    }
}

/// The programs gcc runs to compile `language` to an object.
fn gcc_programs(language: Language) -> Option<&'static [&'static str]> {
    match language {
        Language::C | Language::PreprocessedC | Language::AsmWithCpp => Some(&["cc1", "as"]),
        Language::Cxx | Language::PreprocessedCxx => Some(&["cc1plus", "as"]),
        Language::Asm => Some(&["as"]),
        _ => None,
    }
}

/// The driver and what it runs and reads of its own, before libraries and the loader.
struct Parts {
    files: Vec<ToolFile>,
    /// The driver, as run remotely.
    driver: PathBuf,
    finds_itself: FindsItself,
}

/// The toolchain of `identity` for `language`, or why it cannot be shipped.
pub(crate) async fn discover(
    identity: &Identity,
    language: Language,
    env: &[(OsString, OsString)],
) -> Result<Toolchain, String> {
    let Parts {
        mut files,
        driver,
        finds_itself,
    } = match identity.family {
        Family::Gcc => gcc_parts(identity, language)?,
        Family::Clang => clang_parts(identity, language, env).await?,
    };
    let mut libraries: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut library_dirs: Vec<PathBuf> = Vec::new();
    let programs: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.executable)
        .map(|f| f.local.clone())
        .collect();
    for prog in &programs {
        for lib in shared_libraries(prog, env).await? {
            if let Some(dir) = lib.parent()
                && !library_dirs.iter().any(|d| d == dir)
            {
                library_dirs.push(dir.to_path_buf());
            }
            let next = libraries.len();
            libraries.entry(lib).or_insert(next);
        }
    }
    let mut libraries: Vec<(PathBuf, usize)> = libraries.into_iter().collect();
    libraries.sort_by_key(|(_, order)| *order);
    for (lib, _) in libraries {
        files.push(ToolFile {
            remote: lib.clone(),
            local: lib,
            executable: false,
        });
    }
    files.push(ToolFile {
        remote: LOADER.into(),
        local: LOADER.into(),
        executable: true,
    });
    Ok(Toolchain {
        files,
        driver,
        loader: LOADER.into(),
        library_dirs,
        finds_itself,
    })
}

/// gcc's driver and the programs it runs for `language`, where the driver looks for them.
fn gcc_parts(identity: &Identity, language: Language) -> Result<Parts, String> {
    let wanted = gcc_programs(language)
        .ok_or_else(|| format!("no remote toolchain for {}", language.gcc_name()))?;
    let driver = std::fs::canonicalize(&identity.driver).map_err(|e| {
        format!(
            "cannot resolve the compiler {}: {e}",
            identity.driver.display()
        )
    })?;
    let program = |name: &str| {
        identity
            .programs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
    };
    // gcc looks for its programs in its own directory first (where cc1 is), then in PATH;
    // remotely there is no PATH to speak of, so a program found in PATH lands beside cc1.
    let own_dir = program("cc1")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or("gcc's cc1 was not found")?;
    let mut files = vec![ToolFile {
        remote: driver.clone(),
        local: driver.clone(),
        executable: true,
    }];
    for name in wanted {
        let local = program(name).ok_or_else(|| format!("gcc's {name} was not found"))?;
        let remote = if local.starts_with(&own_dir) {
            local.clone()
        } else {
            own_dir.join(name)
        };
        files.push(ToolFile {
            remote,
            local,
            executable: true,
        });
    }
    Ok(Parts {
        files,
        driver,
        finds_itself: FindsItself::Gcc,
    })
}

/// The languages clang compiles in its own process: the assembler (`-cc1as`) is a second
/// run of the driver's program, which would not start through the loader remotely.
const CLANG_IN_PROCESS: &[Language] = &[
    Language::C,
    Language::Cxx,
    Language::PreprocessedC,
    Language::PreprocessedCxx,
];

/// clang's driver, at the path the user runs it by (its name selects C or C++, its
/// directory the gcc installation), the files of its resource directory it checks for
/// (sanitizer ignore lists), and the gcc installation's `crtbegin.o`, by which clang
/// recognises one.
async fn clang_parts(
    identity: &Identity,
    language: Language,
    env: &[(OsString, OsString)],
) -> Result<Parts, String> {
    if !CLANG_IN_PROCESS.contains(&language) {
        return Err(format!(
            "clang assembles {} by running itself again, which is not shipped yet",
            language.gcc_name()
        ));
    }
    let spelled = identity.driver.clone();
    let dir = spelled
        .parent()
        .filter(|d| d.is_absolute())
        .ok_or_else(|| format!("clang's path {} is not absolute", spelled.display()))?
        .to_path_buf();
    let physical = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| c == p);
    if !physical(&dir) {
        return Err(format!(
            "clang's directory {} is reached through a symlink",
            dir.display()
        ));
    }
    let local = std::fs::canonicalize(&spelled)
        .map_err(|e| format!("cannot resolve the compiler {}: {e}", spelled.display()))?;
    let resource_dir = PathBuf::from(ask(&spelled, "-print-resource-dir", env).await?.trim());
    if !physical(&resource_dir) {
        return Err(format!(
            "clang's resource directory {} is not a directory reached without symlinks",
            resource_dir.display()
        ));
    }
    let mut files = vec![ToolFile {
        remote: spelled.clone(),
        local,
        executable: true,
    }];
    if let Ok(entries) = std::fs::read_dir(resource_dir.join("share")) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(ToolFile {
                    remote: entry.path(),
                    local: entry.path(),
                    executable: false,
                });
            }
        }
    }
    let verbose = ask(&spelled, "-v", env).await?;
    let installation = verbose
        .lines()
        .find_map(|l| l.strip_prefix("Selected GCC installation: "))
        .map(|p| PathBuf::from(p.trim()));
    let gcc_toolchain = match installation {
        Some(install) => {
            let resolved = beside_driver(&install, &dir).ok_or_else(|| {
                format!(
                    "clang's gcc installation {} is not reached from its own directory without symlinks",
                    install.display()
                )
            })?;
            let crtbegin = resolved.join("crtbegin.o");
            if crtbegin.is_file() {
                files.push(ToolFile {
                    remote: crtbegin.clone(),
                    local: crtbegin,
                    executable: false,
                });
            }
            // `PREFIX/lib/gcc/TRIPLE/VERSION`: the prefix is what `--gcc-toolchain` takes.
            install.ancestors().nth(4).map(Path::to_path_buf)
        }
        None => None,
    };
    Ok(Parts {
        files,
        driver: spelled,
        finds_itself: FindsItself::Clang {
            resource_dir,
            gcc_toolchain,
        },
    })
}

/// Where `path` leads, if the kernel would resolve it below the root as here: each `..` in
/// it follows a directory the root has (the driver's), and no component is a symlink.
fn beside_driver(path: &Path, driver_dir: &Path) -> Option<PathBuf> {
    let mut lexical = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if lexical != driver_dir {
                    return None;
                }
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let resolved = std::fs::canonicalize(path).ok()?;
    (resolved == lexical).then_some(resolved)
}

/// What the driver prints for `flag` (stdout and stderr, as `-v` writes to stderr).
async fn ask(driver: &Path, flag: &str, env: &[(OsString, OsString)]) -> Result<String, String> {
    let out = run_host(
        &HostCommand {
            program: driver.to_path_buf(),
            args: vec![flag.into()],
            cwd: PathBuf::from("/"),
            env: env.to_vec(),
            umask: None,
        },
        PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| format!("cannot ask {} for {flag}: {e}", driver.display()))?;
    if !out.termination.success() {
        return Err(format!("`{} {flag}` {}", driver.display(), out.termination));
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
