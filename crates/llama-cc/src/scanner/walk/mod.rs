//! The walk: a compile's includes followed from its source, as the preprocessor would.
//!
//! Each file's [`Directives`] come from the caller (who keeps them by content digest);
//! conditionals are decided with the macro table the walk keeps ([`expr`]); an include in a
//! live branch is resolved along the compile's search path and entered, unless an include
//! guard or `#pragma once` says it would add nothing. What the walk cannot decide gives it
//! up ([`GiveUp`]) rather than guess: the caller then asks the compiler (`-M`).

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::directives::{Directive, Directives, IncludeKind, Target};
use super::expr::{self, Context, Macro};
use super::macros::MacroTable;

/// Where includes are searched, in gcc's order.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    /// `-iquote` directories (and, with `-I-`, the `-I` ones before it): for `"name"` only.
    pub quote: Vec<PathBuf>,
    /// `-I`, `-isystem`, the compiler's system directories, `-idirafter`: for both forms.
    pub angled: Vec<PathBuf>,
    /// `"name"` looks in the including file's directory first (not after gcc's `-I-`).
    pub including_dir_first: bool,
}

/// What the walk needs of the file system.
pub trait Files {
    /// The directives of the file at `path`, or `None` when it is not a readable regular
    /// file (the compiler passes over it in a search).
    fn directives(&mut self, path: &Path) -> Option<Arc<Directives>>;

    /// What `#pragma once` and include guards know the file at `path` by. A caller that
    /// has just looked the file up can answer without another `stat`.
    fn identity(&mut self, path: &Path) -> FileId {
        FileId::of(path)
    }
}

/// The file system read directly, each file's directives extracted once per path (for
/// tools that walk many compiles in one process; the daemon keeps them by digest instead).
#[derive(Default)]
pub struct DiskFiles {
    read: HashMap<PathBuf, Option<Arc<Directives>>>,
}

impl Files for DiskFiles {
    fn directives(&mut self, path: &Path) -> Option<Arc<Directives>> {
        self.read
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                std::fs::metadata(path).ok().filter(|m| m.is_file())?;
                let text = std::fs::read(path).ok()?;
                Some(Arc::new(super::directives::extract(&text)))
            })
            .clone()
    }
}

/// Everything a compile's preprocessing reads, and what it looked for and did not find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Every file read or tested present, the source first, each once, as the search
    /// found it (not resolved through links).
    pub read: Vec<PathBuf>,
    /// Paths tried before the one found: were one of them to appear, the compile would
    /// read it instead.
    pub absent: Vec<PathBuf>,
}

/// Why the walk stopped: the compile's inputs must be asked of the compiler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// An `#if` the walk cannot evaluate.
    #[error("{file}: {reason}")]
    Condition {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: expr::Undecidable,
    },
    /// Feature tests (`__has_builtin(x)` ...) the caller did not answer: ask the compiler
    /// and walk again.
    #[error("feature tests to ask the compiler: {0:?}")]
    Features(Vec<(String, String)>),
    /// A directive the walk does not model, in a live branch.
    #[error("{file}: #{name} is not understood by the include scanner")]
    Directive {
        /// The file.
        file: PathBuf,
        /// The directive's name.
        name: String,
    },
    /// An include that names no file the search finds (the compiler reports it).
    #[error("{file}: {name} is not found")]
    NotFound {
        /// The including file.
        file: PathBuf,
        /// What it includes.
        name: String,
    },
    /// An include whose macros do not expand to a header name.
    #[error("{file}: #include {text} does not name a header")]
    Computed {
        /// The including file.
        file: PathBuf,
        /// The text after `#include`.
        text: String,
    },
    /// Includes nested deeper than the compiler allows.
    #[error("{0}: includes nested too deep")]
    TooDeep(PathBuf),
}

impl GiveUp {
    /// A short, stable name for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            GiveUp::Condition { .. } => "condition",
            GiveUp::Features(_) => "feature-test",
            GiveUp::Directive { .. } => "directive",
            GiveUp::NotFound { .. } => "not-found",
            GiveUp::Computed { .. } => "computed-include",
            GiveUp::TooDeep(_) => "too-deep",
        }
    }
}

/// gcc's limit on nested includes.
const MAX_DEPTH: usize = 200;

/// What a compile starts from: its macros (the compiler's predefined ones, then `-D` and
/// `-U` in order), its forced includes (`-include`, `-imacros`), its language.
pub struct Start<'a> {
    /// The macro table before the first line.
    pub macros: MacroTable,
    /// `-imacros` and `-include` files, in order, before the source.
    pub forced: &'a [PathBuf],
    /// C++ (`true` and `false` are values).
    pub cplusplus: bool,
    /// The compile's working directory (where forced includes are looked for first).
    pub cwd: &'a Path,
    /// Assembler with the preprocessor (`.S`): a `#` line that is no directive is the
    /// assembler's (a comment), passed through, not a reason to give up.
    pub assembler: bool,
    /// Answers to feature tests, by `(test, argument)`.
    pub features: &'a HashMap<(String, String), i64>,
}

/// Follows the includes of `source` (a path as the compiler is given it, relative to the
/// working directory or absolute).
pub fn walk(
    source: &Path,
    start: Start<'_>,
    search: &SearchPath,
    files: &mut dyn Files,
) -> Result<Scanned, GiveUp> {
    let cwd = start.cwd;
    let mut walker = Walker {
        search,
        files,
        macros: start.macros,
        cplusplus: start.cplusplus,
        assembler: start.assembler,
        features: start.features,
        wanted: Vec::new(),
        scanned: Scanned::default(),
        seen: FxHashSet::default(),
        once: FxHashSet::default(),
        guards: FxHashMap::default(),
        current: Location::default(),
    };
    let main = Location {
        file: source.to_path_buf(),
        found_at: None,
    };
    for forced in start.forced {
        // gcc looks for these in the working directory, then along the `"name"` chain, as
        // if a file there (its "<command-line>") included them.
        let at = Location {
            file: cwd.join("<command-line>"),
            found_at: None,
        };
        let found = walker
            .resolve(&at, forced.to_string_lossy().as_ref(), true, false)
            .ok_or_else(|| GiveUp::NotFound {
                file: source.to_path_buf(),
                name: forced.display().to_string(),
            })?;
        let entered = walker.enter(found, 1);
        walker.done(entered)?;
    }
    let entered = walker.enter(main, 0);
    walker.done(entered)?;
    Ok(walker.scanned)
}

/// A file being read, and where in the search chain it was found (`None`: not through the
/// chain, so `#include_next` in it searches as `#include` does).
#[derive(Debug, Clone, Default)]
struct Location {
    file: PathBuf,
    found_at: Option<usize>,
}

struct Walker<'a> {
    search: &'a SearchPath,
    files: &'a mut dyn Files,
    macros: MacroTable,
    cplusplus: bool,
    assembler: bool,
    features: &'a HashMap<(String, String), i64>,
    /// Feature tests met and not answered.
    wanted: Vec<(String, String)>,
    scanned: Scanned,
    seen: FxHashSet<PathBuf>,
    /// Files that said `#pragma once` or came through `#import`.
    once: FxHashSet<FileId>,
    /// Files wrapped in an include guard, and its macro.
    guards: FxHashMap<FileId, String>,
    /// The file whose `#if` is being evaluated (for `__has_include_next`).
    current: Location,
}

/// One level of `#if` nesting.
struct Conditional {
    /// The enclosing text is live.
    outer: bool,
    /// A branch of this conditional has been taken.
    taken: bool,
    /// The current branch is live.
    live: bool,
}

impl Walker<'_> {
    /// A walk that met unanswered feature tests went on as if each were false: whatever it
    /// found after is void, and the tests are what to ask.
    fn done(&mut self, entered: Result<(), GiveUp>) -> Result<(), GiveUp> {
        if self.wanted.is_empty() {
            entered
        } else {
            Err(GiveUp::Features(std::mem::take(&mut self.wanted)))
        }
    }

    fn record(&mut self, path: &Path) {
        if self.seen.insert(path.to_path_buf()) {
            self.scanned.read.push(path.to_path_buf());
        }
    }

    /// The file the preprocessor would open for `name`, and where in the chain it was;
    /// every candidate tried before it is recorded absent.
    fn resolve(
        &mut self,
        from: &Location,
        name: &str,
        quoted: bool,
        next: bool,
    ) -> Option<Location> {
        let name_path = Path::new(name);
        if name_path.is_absolute() {
            return self.exists(name_path).then(|| Location {
                file: name_path.to_path_buf(),
                found_at: None,
            });
        }
        let search = self.search;
        let first = match (next, from.found_at) {
            (true, Some(at)) => at + 1,
            _ if quoted => {
                if !next && self.search.including_dir_first {
                    let dir = from.file.parent().unwrap_or(Path::new(""));
                    let candidate = dir.join(name_path);
                    if self.exists(&candidate) {
                        return Some(Location {
                            file: candidate,
                            found_at: None,
                        });
                    }
                    self.scanned.absent.push(candidate);
                }
                0
            }
            _ => self.search.quote.len(),
        };
        let chain = search.quote.iter().chain(search.angled.iter());
        for (at, dir) in chain.enumerate().skip(first) {
            let candidate = dir.join(name_path);
            if self.exists(&candidate) {
                return Some(Location {
                    file: candidate,
                    found_at: Some(at),
                });
            }
            self.scanned.absent.push(candidate);
        }
        None
    }

    fn exists(&mut self, path: &Path) -> bool {
        self.files.directives(path).is_some()
    }

    /// Reads `at` unless a guard or `#pragma once` makes it a no-op, following its
    /// includes.
    fn enter(&mut self, at: Location, depth: usize) -> Result<(), GiveUp> {
        if depth > MAX_DEPTH {
            return Err(GiveUp::TooDeep(at.file));
        }
        self.record(&at.file);
        let identity = self.files.identity(&at.file);
        if self.once.contains(&identity)
            || self
                .guards
                .get(&identity)
                .is_some_and(|g| self.macros.contains_key(g))
        {
            return Ok(());
        }
        let Some(directives) = self.files.directives(&at.file) else {
            return Err(GiveUp::NotFound {
                file: at.file.clone(),
                name: at.file.display().to_string(),
            });
        };
        if let Some(guard) = &directives.guard {
            self.guards.insert(identity.clone(), guard.clone());
        }
        let mut stack: Vec<Conditional> = Vec::new();
        for d in &directives.list {
            let live = stack.last().is_none_or(|c| c.live);
            match d {
                Directive::If(_) | Directive::Ifdef(_) | Directive::Ifndef(_) => {
                    let value = live && self.condition(&at, d)?;
                    stack.push(Conditional {
                        outer: live,
                        taken: value,
                        live: value,
                    });
                }
                Directive::Elif(_) | Directive::Elifdef(_) | Directive::Elifndef(_) => {
                    let Some(c) = stack.last() else { continue };
                    let value = c.outer && !c.taken && self.condition(&at, d)?;
                    if let Some(c) = stack.last_mut() {
                        c.live = value;
                        c.taken |= value;
                    }
                }
                Directive::Else => {
                    if let Some(c) = stack.last_mut() {
                        c.live = c.outer && !c.taken;
                        c.taken = true;
                    }
                }
                Directive::Endif => {
                    stack.pop();
                }
                _ if !live => {}
                Directive::Define { name, def } => {
                    self.macros.insert(name.clone(), def.clone());
                }
                Directive::Undef(name) => {
                    self.macros.remove(name);
                }
                Directive::PragmaOnce => {
                    self.once.insert(identity.clone());
                }
                Directive::Include { kind, target } => self.include(&at, *kind, target, depth)?,
                Directive::Unknown(_) if self.assembler => {}
                Directive::Unknown(name) => {
                    return Err(GiveUp::Directive {
                        file: at.file.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn include(
        &mut self,
        at: &Location,
        kind: IncludeKind,
        target: &Target,
        depth: usize,
    ) -> Result<(), GiveUp> {
        let (quoted, name) = match target {
            Target::Quoted(n) => (true, n.clone()),
            Target::Angled(n) => (false, n.clone()),
            Target::Computed(text) => {
                self.current = at.clone();
                expr::header_of(text, self).map_err(|_| GiveUp::Computed {
                    file: at.file.clone(),
                    text: text.clone(),
                })?
            }
        };
        let next = kind == IncludeKind::IncludeNext;
        let found = self
            .resolve(at, &name, quoted, next)
            .ok_or_else(|| GiveUp::NotFound {
                file: at.file.clone(),
                name: name.clone(),
            })?;
        // `#import`: entered at most once, like a file that says `#pragma once`.
        let imported = (kind == IncludeKind::Import).then(|| self.files.identity(&found.file));
        self.enter(found, depth + 1)?;
        self.once.extend(imported);
        Ok(())
    }

    /// Whether the branch a conditional directive opens is taken.
    fn condition(&mut self, at: &Location, d: &Directive) -> Result<bool, GiveUp> {
        let expression = match d {
            Directive::Ifdef(n) | Directive::Elifdef(n) => return Ok(self.is_defined(n)),
            Directive::Ifndef(n) | Directive::Elifndef(n) => return Ok(!self.is_defined(n)),
            Directive::If(e) | Directive::Elif(e) => e,
            _ => return Ok(false),
        };
        self.current = at.clone();
        let wanted_before = self.wanted.len();
        let result = expr::evaluate(expression, self);
        match result {
            Ok(v) => Ok(v),
            // Unanswered feature tests: collected, and the walk goes on as if false, to find
            // every one in a single pass; the result is then discarded by `walk`.
            Err(_) if self.wanted.len() > wanted_before => Ok(false),
            Err(reason) => Err(GiveUp::Condition {
                file: at.file.clone(),
                reason,
            }),
        }
    }
}

impl Walker<'_> {
    fn is_defined(&mut self, name: &str) -> bool {
        self.macros.contains_key(name) || self.builtin_defined(name)
    }
}

impl Context for Walker<'_> {
    fn lookup(&self, name: &str) -> Option<&Macro> {
        self.macros.get(name)
    }

    fn has_include(&mut self, next: bool, quoted: bool, name: &str) -> bool {
        let from = self.current.clone();
        match self.resolve(&from, name, quoted, next) {
            Some(found) => {
                // Tested present: the remote side must find it too.
                self.record(&found.file);
                true
            }
            None => false,
        }
    }

    fn feature(&mut self, test: &str, argument: &str) -> Option<i64> {
        let key = (test.to_string(), argument.to_string());
        let answer = self.features.get(&key).copied();
        if answer.is_none() && !self.wanted.contains(&key) {
            self.wanted.push(key);
        }
        answer
    }

    fn cplusplus(&self) -> bool {
        self.cplusplus
    }

    fn builtin_defined(&mut self, name: &str) -> bool {
        if expr::ALWAYS_DEFINED.contains(&name) {
            return true;
        }
        // Asked of the compiler as the feature test `defined(NAME)`.
        expr::FEATURE_TESTS.contains(&name) && self.feature("defined", name) == Some(1)
    }
}

/// What `#pragma once` and include guards know a file by: its device and inode, as the
/// compiler does (one `stat`, where resolving the path's links would take one per
/// component); the path as given when it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileId {
    /// A file's device and inode.
    Inode(u64, u64),
    /// A path that could not be read.
    Path(PathBuf),
}

impl FileId {
    /// The identity of the file at `path`, by one `stat`.
    pub fn of(path: &Path) -> FileId {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => FileId::Inode(m.dev(), m.ino()),
            Err(_) => FileId::Path(path.to_path_buf()),
        }
    }
}

#[cfg(test)]
mod tests;
