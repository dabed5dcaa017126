//! `LLAMACC_LOCAL_PREPROCESS` and `LLAMACC_FULL_PREPROCESS`: a remote compile that ships the
//! source preprocessed here instead of its headers. It costs this machine a preprocessor run
//! and the link more bytes (every header, expanded, per unit, where shipped headers are
//! uploaded once), and spares the remote side the preprocessing.
//!
//! Only where the object stays the one a local compile makes: what each compiler records
//! of preprocessed text was measured (gcc 12, clang 14) and is in [`RECIPES`]. Elsewhere the
//! compile ships its headers as usual and the daemon says why, once.

use std::ffi::OsString;
use std::sync::Arc;

use super::remote::Declined;
use super::{CompileService, Job};
use crate::compilation::{Compilation, DepFile, DepKind, DepTarget, Family, Language};
use crate::settings::Settings;
use crate::stats::NotRemote;

/// How much of the preprocessing runs here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Depth {
    /// Includes and conditionals only; macros expand remotely (`LLAMACC_LOCAL_PREPROCESS`).
    Directives,
    /// Everything (`LLAMACC_FULL_PREPROCESS`).
    Full,
}

impl Depth {
    /// What the settings ask for; `None`: ship headers.
    pub(super) fn asked(settings: &Settings) -> Option<Depth> {
        match (settings.local_preprocess, settings.full_preprocess) {
            (_, true) => Some(Depth::Full),
            (true, false) => Some(Depth::Directives),
            (false, false) => None,
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Depth::Directives => "LLAMACC_LOCAL_PREPROCESS",
            Depth::Full => "LLAMACC_FULL_PREPROCESS",
        }
    }
}

/// How one compiler preprocesses to one depth, and what it needs to compile the text.
struct Recipe {
    family: Family,
    depth: Depth,
    /// Added to the preprocessing run (after `-E`).
    here: &'static [&'static str],
    /// Added to the remote compile before the source.
    remote: fn(Language) -> &'static [&'static str],
    /// Whether the object is still the local one with debug information on: gcc names
    /// `-fdirectives-only` in `DW_AT_producer` unless switches are not recorded; fully
    /// preprocessed text moves macro expansions' columns; clang's DWARF 5 records the
    /// source's MD5, which the rewritten text does not have.
    debug_info: fn(&Compilation) -> bool,
}

/// The language of fully preprocessed text, for `-x`.
fn cpp_output(language: Language) -> &'static [&'static str] {
    match language {
        Language::Cxx => &["-x", "c++-cpp-output"],
        _ => &["-x", "cpp-output"],
    }
}

/// clang's: it also warns that the preprocessor's flags (`-I`, `-D`, the prefix maps) go
/// unused, which a local compile, using them, never says.
fn clang_cpp_output(language: Language) -> &'static [&'static str] {
    match language {
        Language::Cxx => &["-Wno-unused-command-line-argument", "-x", "c++-cpp-output"],
        _ => &["-Wno-unused-command-line-argument", "-x", "cpp-output"],
    }
}

const RECIPES: &[Recipe] = &[
    Recipe {
        family: Family::Gcc,
        depth: Depth::Directives,
        here: &["-fdirectives-only"],
        remote: |_| &["-fpreprocessed", "-fdirectives-only"],
        debug_info: records_no_switches,
    },
    Recipe {
        family: Family::Gcc,
        depth: Depth::Full,
        here: &[],
        remote: cpp_output,
        debug_info: |_| false,
    },
    Recipe {
        family: Family::Clang,
        depth: Depth::Directives,
        here: &["-frewrite-includes"],
        remote: |_| &[],
        debug_info: |_| false,
    },
    Recipe {
        family: Family::Clang,
        depth: Depth::Full,
        here: &[],
        remote: clang_cpp_output,
        debug_info: |_| false,
    },
];

/// gcc's `-gno-record-gcc-switches` is in effect (the last of it and its opposite).
fn records_no_switches(c: &Compilation) -> bool {
    c.args
        .iter()
        .rev()
        .find_map(|a| match a.to_str() {
            Some("-gno-record-gcc-switches") => Some(true),
            Some("-grecord-gcc-switches") => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// A source preprocessed here, for a remote compile.
pub(super) struct Preprocessed {
    /// The text, shipped in the source's place.
    pub(super) text: Arc<[u8]>,
    /// The depfile the compile would have written, written by the preprocessor here.
    pub(super) depfile: Option<Vec<u8>>,
    /// Inserted before the source in the remote arguments.
    pub(super) remote: &'static [&'static str],
}

/// Why a compile asked to preprocess here ships its headers instead.
fn unsuitable(recipe: &Recipe, c: &Compilation) -> Option<&'static str> {
    if !c.language.is_preprocessed_by_compiler() {
        return Some("the source is not preprocessed");
    }
    if c.has_debug_info && !(recipe.debug_info)(c) {
        return Some(match (recipe.family, recipe.depth) {
            (Family::Gcc, Depth::Directives) => {
                "with debug information gcc records -fdirectives-only in the object \
                 (-gno-record-gcc-switches avoids it)"
            }
            (Family::Gcc, Depth::Full) => {
                "with debug information the object records the columns of expanded macros"
            }
            (Family::Clang, _) => {
                "with debug information clang records the source's MD5, which preprocessed \
                 text does not have"
            }
        });
    }
    if !c.forced_includes.is_empty() {
        return Some("-include and -imacros would be read again by the remote compile");
    }
    if c.args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a.starts_with("-Wp,") && a.contains("-M"))
    }) {
        return Some("a depfile asked with -Wp, cannot be moved to the preprocessor run");
    }
    None
}

impl CompileService {
    /// The source of `job` preprocessed here, when the settings ask for it and the object
    /// stays the local one; `Ok(None)`: ship headers (the reason said once).
    pub(super) async fn preprocess_here(
        &self,
        job: &Job<'_>,
        discovery: &[OsString],
        notes: &mut Vec<String>,
    ) -> Result<Option<Preprocessed>, Declined> {
        let Some(depth) = Depth::asked(job.settings) else {
            return Ok(None);
        };
        let family = job.identity.family;
        let Some(recipe) = RECIPES
            .iter()
            .find(|r| r.family == family && r.depth == depth)
        else {
            return Ok(None);
        };
        if let Some(why) = unsuitable(recipe, &job.c) {
            let key = format!("{}: {why}", depth.variable());
            if self.ledger.say_once(&key) {
                notes.push(format!(
                    "llamacc: note: {} not applied to {} and compiles like it: {why} \
                     (said once)",
                    depth.variable(),
                    job.c.source.display()
                ));
            }
            return Ok(None);
        }
        let failed = |detail: String| Declined::Unsuitable(NotRemote::DependencyScan, detail);
        let text_file = self
            .scratch_file("preprocessed", ".i")
            .map_err(|e| failed(e.to_string()))?;
        let depfile = match &job.c.depfile {
            Some(_) => Some(
                self.scratch_file("preprocessed", ".d")
                    .map_err(|e| failed(e.to_string()))?,
            ),
            None => None,
        };
        let mut args = discovery.to_vec();
        args.push("-E".into());
        args.extend(recipe.here.iter().map(OsString::from));
        args.extend(["-o".into(), text_file.as_os_str().to_owned()]);
        if let (Some(wanted), Some(path)) = (&job.c.depfile, &depfile) {
            args.extend(depfile_flags(wanted, &job.c, path.as_os_str()));
        }
        let output = self
            .run_compiler(job, args)
            .await
            .map_err(|e| failed(format!("preprocessing: {e}")))?;
        if !output.termination.success() {
            // The compile fails the same way: let it, with the user's diagnostics.
            return Err(failed("preprocessing failed".into()));
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| failed(format!("reading {}: {e}", path.display())))
        };
        Ok(Some(Preprocessed {
            text: read(&text_file)?.into(),
            depfile: depfile.as_deref().map(read).transpose()?,
            remote: (recipe.remote)(job.c.language),
        }))
    }
}

/// The flags that make the preprocessor write the compile's depfile to `path`, as the
/// compile would have: its kind, targets (the output, quoted, by default: what both
/// drivers add when compiling), phony rules and missing-header handling.
fn depfile_flags(wanted: &DepFile, c: &Compilation, path: &std::ffi::OsStr) -> Vec<OsString> {
    let mut flags: Vec<OsString> = vec![
        match wanted.kind {
            DepKind::AllHeaders => "-MD",
            DepKind::UserHeadersOnly => "-MMD",
        }
        .into(),
        "-MF".into(),
        path.to_owned(),
    ];
    if wanted.targets.is_empty() {
        flags.extend(["-MQ".into(), c.output.as_os_str().to_owned()]);
    }
    for target in &wanted.targets {
        let (flag, name) = match target {
            DepTarget::Plain(t) => ("-MT", t),
            DepTarget::Quoted(t) => ("-MQ", t),
        };
        flags.extend([flag.into(), name.clone()]);
    }
    if wanted.phony_targets {
        flags.push("-MP".into());
    }
    if wanted.missing_headers_generated {
        flags.push("-MG".into());
    }
    flags
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compilation::Verdict;

    fn compile(line: &str, family: Family) -> Compilation {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        match crate::args::parse(&args, Path::new("/src"), family) {
            Verdict::Compile(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn recipe(family: Family, depth: Depth) -> &'static Recipe {
        RECIPES
            .iter()
            .find(|r| r.family == family && r.depth == depth)
            .unwrap()
    }

    #[test]
    fn the_preprocessor_writes_the_depfile_the_compile_would() {
        let c = compile("-c -MMD -MP a.c -o obj/a.o", Family::Gcc);
        let flags = depfile_flags(c.depfile.as_ref().unwrap(), &c, "/tmp/d".as_ref());
        assert_eq!(flags, ["-MMD", "-MF", "/tmp/d", "-MQ", "obj/a.o", "-MP"]);
        let c = compile("-c -MD -MT t1 -MQ t$2 a.c", Family::Clang);
        let flags = depfile_flags(c.depfile.as_ref().unwrap(), &c, "/tmp/d".as_ref());
        assert_eq!(flags, ["-MD", "-MF", "/tmp/d", "-MT", "t1", "-MQ", "t$2"]);
    }

    #[test]
    fn only_where_the_object_stays_the_same() {
        let gcc = recipe(Family::Gcc, Depth::Directives);
        assert_eq!(unsuitable(gcc, &compile("-c -O2 a.c", Family::Gcc)), None);
        assert!(unsuitable(gcc, &compile("-c -g a.c", Family::Gcc)).is_some());
        let quiet = compile("-c -g -gno-record-gcc-switches a.c", Family::Gcc);
        assert_eq!(unsuitable(gcc, &quiet), None);
        let full = recipe(Family::Gcc, Depth::Full);
        assert!(unsuitable(full, &quiet).is_some());
        let clang = recipe(Family::Clang, Depth::Directives);
        assert!(unsuitable(clang, &compile("-c -g a.c", Family::Clang)).is_some());
        assert!(unsuitable(gcc, &compile("-c -include c.h a.c", Family::Gcc)).is_some());
        assert!(unsuitable(gcc, &compile("-c -Wp,-MD,a.d a.c", Family::Gcc)).is_some());
        assert!(unsuitable(gcc, &compile("-c a.s", Family::Gcc)).is_some());
    }
}
