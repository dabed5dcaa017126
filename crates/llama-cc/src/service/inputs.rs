//! What a compile read, hashed into an input tree, with what else decides its result:
//! candidates that were absent, names `__has_include` found, and the system include
//! directories a depfile left out.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use llama_core::{TreeBuilder, encode_os};

use super::paths::{normalize, physical_dir, resolve, root_relative};
use super::{CompileService, Job};
use crate::compilation::{Compilation, DepKind, Language};
use crate::error::CcError;
use crate::scan::contains;
use crate::stats::{CannotCache, TrustReason};

/// What a compile read, hashed, and what else decides its result.
pub(super) struct GatheredInputs {
    /// Each with its hash and size, for the manifest.
    pub(super) hashed: Vec<(String, [u8; 32], u64)>,
    /// The input tree, files at their root-relative paths.
    pub(super) tree: TreeBuilder,
    /// Paths whose absence the result depends on.
    pub(super) absent: Vec<String>,
    /// Paths whose presence the result depends on (`__has_include`).
    pub(super) present: Vec<String>,
    /// Fingerprint of the system include directories, when their headers are not listed.
    pub(super) system: Option<[u8; 32]>,
}

/// Where [`CompileService::gather_inputs`] learns what a compile read.
#[derive(Clone, Copy)]
pub(super) enum Reads<'a> {
    /// The depfile the compiler wrote.
    Depfile(&'a Path),
    /// The files the include scanner listed.
    Files(&'a [PathBuf]),
    /// Nothing but the source (no preprocessor, or no depfile).
    SourceOnly,
}

/// How [`CompileService::gather_inputs`] treats what it finds.
#[derive(Clone, Copy)]
pub(super) enum Gather {
    /// The compiler ran here from `started`: an input changed since is not trusted.
    InPlace { started: SystemTime },
    /// The inputs are hashed to be shipped: every name must mean the same remotely.
    Remote,
}

/// The inputs hashed, and the names they test with `__has_include`.
struct Hashed {
    hashed: Vec<(String, [u8; 32], u64)>,
    tree: TreeBuilder,
    tested_names: Vec<String>,
}

impl CompileService {
    /// Hashes what a compile read (`reads`: its depfile, the scanner's list or the source
    /// alone) into an
    /// input tree, with what else decides the result: candidates that were absent, names
    /// `__has_include` found, and, when the depfile left system headers out
    /// (`listed` = -MMD), the fingerprint of their directories. `Ok(Err(reason))`: the
    /// compile cannot be cached.
    pub(super) async fn gather_inputs(
        &self,
        job: &Job<'_>,
        reads: Reads<'_>,
        listed: Option<DepKind>,
        mode: Gather,
    ) -> Result<Result<GatheredInputs, CannotCache>, CcError> {
        let inputs = match read_inputs(job, reads, mode)? {
            Ok(inputs) => inputs,
            Err(reason) => return Ok(Err(reason)),
        };
        let Hashed {
            hashed,
            tree,
            mut tested_names,
        } = match self.hash_inputs(&inputs, mode)? {
            Ok(hashed) => hashed,
            Err(reason) => return Ok(Err(reason)),
        };
        // -MMD leaves system headers out: cover them by the fingerprint of their directories.
        let system = match listed {
            Some(DepKind::UserHeadersOnly) => {
                let dirs = self.system_dirs(job).await?;
                Some(*self.caches.sysdirs.fingerprint(&dirs).hash_bytes())
            }
            _ => None,
        };
        let mut absent = absent_candidates(&job.req.cwd, &job.c, &inputs);
        // __has_include: whether each tested name exists, in every directory it could be
        // found in, is an input too.
        let mut present = Vec::new();
        if !tested_names.is_empty() {
            tested_names.sort();
            tested_names.dedup();
            let dirs = self.has_include_dirs(job, &inputs).await?;
            for name in &tested_names {
                for dir in &dirs {
                    let path = dir.join(name);
                    let candidate = encode_os(path.as_os_str()).into_owned();
                    if fs::metadata(&path).is_ok() {
                        present.push(candidate);
                    } else {
                        absent.push(candidate);
                    }
                }
            }
            absent.sort();
            absent.dedup();
        }
        Ok(Ok(GatheredInputs {
            hashed,
            tree,
            absent,
            present,
            system,
        }))
    }

    /// Hashes `inputs` into a tree, and collects the names they test with
    /// `__has_include`. `Ok(Err(reason))`: the compile cannot be cached.
    fn hash_inputs(
        &self,
        inputs: &[PathBuf],
        mode: Gather,
    ) -> Result<Result<Hashed, CannotCache>, CcError> {
        let mut hashed = Vec::with_capacity(inputs.len());
        let mut tree = TreeBuilder::new();
        let mut tested_names: Vec<String> = Vec::new();
        for path in inputs {
            let digest = match mode {
                Gather::InPlace { started } => match self.caches.trusted_digest(path, started)? {
                    Some(digest) => digest,
                    None => {
                        tracing::debug!("{}: changed while compiling", path.display());
                        return Ok(Err(TrustReason::InputTooNew.into()));
                    }
                },
                // What is hashed is what is shipped: the remote compiler reads these bytes.
                Gather::Remote => self.caches.digest_of(path)?,
            };
            let scan = self.caches.scan(path, &digest);
            if let Some(reason) = scan.uncacheable {
                return Ok(Err(reason));
            }
            tested_names.extend(scan.has_include.iter().cloned());
            hashed.push((
                encode_os(path.as_os_str()).into_owned(),
                *digest.hash_bytes(),
                digest.size(),
            ));
            tree.add_known(&root_relative(path), digest, false, path.clone())
                .map_err(|e| CcError::input(path, e))?;
        }
        Ok(Ok(Hashed {
            hashed,
            tree,
            tested_names,
        }))
    }

    /// Every directory a name tested with `__has_include` could be found in: those of the
    /// inputs, the `-iquote` and `-I` directories, and the system ones.
    async fn has_include_dirs(
        &self,
        job: &Job<'_>,
        inputs: &[PathBuf],
    ) -> Result<Vec<PathBuf>, CcError> {
        let cwd = &job.req.cwd;
        let system = self.system_dirs(job).await?;
        let mut dirs: Vec<PathBuf> = inputs
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .chain(
                job.c
                    .includes
                    .quote
                    .iter()
                    .chain(job.c.includes.bracket.iter())
                    .map(|d| physical_dir(&cwd.join(d))),
            )
            .chain(system)
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }
}

/// The files a compile read, where the kernel finds them: those `reads` lists, its forced
/// includes and its file inputs, sorted.
/// `Ok(Err(reason))`: the compile cannot be cached.
fn read_inputs(
    job: &Job<'_>,
    reads: Reads<'_>,
    mode: Gather,
) -> Result<Result<Vec<PathBuf>, CannotCache>, CcError> {
    let cwd = &job.req.cwd;
    let c = &job.c;
    // A name the remote compiler looks up through a symlink it does not have cannot be
    // shipped; here the kernel's answer is the file the compiler read.
    let physical = |p: &Path| -> Result<PathBuf, CannotCache> {
        let lexical = normalize(p);
        let real = resolve(p).unwrap_or_else(|| lexical.clone());
        match mode {
            Gather::Remote if real != lexical => Err(TrustReason::DotDotThroughSymlink.into()),
            _ => Ok(real),
        }
    };
    let mut inputs: Vec<PathBuf> = match reads {
        Reads::Files(files) => {
            let listed: Result<Vec<PathBuf>, CannotCache> =
                files.iter().map(|p| physical(&cwd.join(p))).collect();
            match listed {
                Ok(listed) => listed,
                Err(reason) => return Ok(Err(reason)),
            }
        }
        Reads::Depfile(path) => match fs::read_to_string(path) {
            Ok(text) => {
                let listed: Result<Vec<PathBuf>, CannotCache> =
                    crate::depfile::prerequisites(&text)
                        .into_iter()
                        .map(|p| physical(&cwd.join(p)))
                        .collect();
                match listed {
                    Ok(listed) => listed,
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            Err(_) => return Ok(Err(CannotCache::NoDepfile)),
        },
        Reads::SourceOnly => {
            // Plain assembly has no preprocessor, so the source is the only input unless
            // it pulls files in itself.
            let source = cwd.join(&c.source);
            if c.language == Language::Asm {
                let text = fs::read(&source).map_err(|e| CcError::input(&source, e))?;
                if contains(&text, b".include") {
                    return Ok(Err(CannotCache::AssemblerInclude));
                }
            }
            match physical(&source) {
                Ok(source) => vec![source],
                Err(reason) => return Ok(Err(reason)),
            }
        }
    };
    for f in c.forced_includes.iter().chain(c.file_inputs.iter()) {
        match physical(&cwd.join(f)) {
            Ok(p) => inputs.push(p),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    inputs.sort();
    inputs.dedup();
    Ok(Ok(inputs))
}

/// Paths that, had they existed, the compiler would have read before one of `inputs`: the
/// same relative name in every include directory searched before the one it was found in.
///
/// Which directory that was is not known (the depfile names the file, not how it was
/// spelled), and directories nest — the source's directory is often an ancestor of an
/// include directory —, so every directory of the chain that contains the input is taken
/// as the one it may have been found in: the candidates of each are absent ones. More
/// candidates than needed cost a miss when one appears; one too few would serve a stale
/// object.
fn absent_candidates(cwd: &Path, c: &Compilation, inputs: &[PathBuf]) -> Vec<String> {
    let source_dir = physical_dir(&cwd.join(&c.source))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let chain: Vec<PathBuf> = std::iter::once(source_dir)
        .chain(c.includes.quote.iter().map(|d| physical_dir(&cwd.join(d))))
        .chain(
            c.includes
                .bracket
                .iter()
                .map(|d| physical_dir(&cwd.join(d))),
        )
        .collect();
    let mut absent = Vec::new();
    for input in inputs {
        for (found_at, dir) in chain.iter().enumerate() {
            let Ok(rel) = input.strip_prefix(dir) else {
                continue;
            };
            for earlier in &chain[..found_at] {
                let candidate = earlier.join(rel);
                if fs::symlink_metadata(&candidate).is_err() {
                    absent.push(encode_os(candidate.as_os_str()).into_owned());
                }
            }
        }
    }
    absent.sort();
    absent.dedup();
    absent
}
