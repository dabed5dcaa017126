//! What both remote executors (lambda, reapi) share, so that neither imports from the other:
//! the default concurrency, and the blobs a result names in llama-exec's error type. The
//! checks themselves are llama-core's ([`llama_core::check_result_shape`],
//! [`llama_core::check_tree`]), as the engine applies them to cached results too.

use llama_core::{Budget, Digest, ResultLimits, check_tree, reapi, result_digests};

use crate::executor::ExecError;

/// Actions in flight at once on a remote executor unless configured (`remote_jobs`).
pub const DEFAULT_REMOTE_JOBS: usize = 64;

/// Every blob an ActionResult names directly, and the digests of its output directories'
/// Tree messages (whose files are found by reading them).
pub fn result_blobs(result: &reapi::ActionResult) -> Result<(Vec<Digest>, Vec<Digest>), ExecError> {
    result_digests(result).map_err(|e| ExecError::InvalidAction(format!("result: {e}")))
}

/// The distinct file blobs of a Tree, once it is checked against the default
/// [`ResultLimits`] (names, symlinks, nesting, what it expands to).
pub fn tree_files(tree: &reapi::Tree) -> Result<Vec<Digest>, ExecError> {
    let mut budget = Budget::default();
    check_tree("", tree, &ResultLimits::default(), &mut budget)
        .map(|checked| checked.files)
        .map_err(|why| ExecError::Refused {
            from: "action cache".into(),
            why,
        })
}
