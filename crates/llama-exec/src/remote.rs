//! What both remote executors (lambda, reapi) share, so that neither imports from the other:
//! the default concurrency, the blobs a result names, and the order in which a result from
//! elsewhere is checked and fetched ([`fetch_result`]). The checks themselves are
//! llama-core's ([`llama_core::check_result_shape`], [`llama_core::check_tree`]), as the
//! engine applies them to cached results too.

use std::future::Future;

use llama_core::{
    Budget, Digest, ResultLimits, Store, check_result_shape, check_tree, reapi, result_digests,
};

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

/// Brings every blob `result` names into `store`, checking before fetching: the result's
/// shape first (paths, digests, sizes), then its output directories' Trees are downloaded
/// and each checked against what is left of the limits, and only then their files and the
/// other blobs are downloaded. Every download is thus bounded by a size checked here.
///
/// `download` fetches the blobs of a list that the store lacks; `from` names where the
/// result came from in a refusal ("REAPI server at ...").
///
/// # Cancel safety
///
/// Dropping the future leaves whatever `download` leaves: blobs already in the store stay
/// there, and nothing else is written.
#[cfg_attr(not(any(feature = "lambda", feature = "reapi")), allow(dead_code))]
pub(crate) async fn fetch_result<E, D, Fut>(
    store: &Store,
    result: &reapi::ActionResult,
    limits: ResultLimits,
    from: &str,
    mut download: D,
) -> Result<(), E>
where
    E: From<ExecError>,
    D: FnMut(Vec<Digest>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let refused = |why| ExecError::Refused {
        from: from.to_string(),
        why,
    };
    let mut budget = check_result_shape(result, &limits).map_err(refused)?;
    let (mut blobs, trees) = result_blobs(result)?;
    download(trees.clone()).await?;
    for (dir, tree) in result.output_directories.iter().zip(&trees) {
        let store = store.clone();
        let tree = *tree;
        let path = dir.path.clone();
        let from = from.to_string();
        // A Tree may be hundreds of megabytes: read and checked off the async threads.
        let (files, used) = tokio::task::spawn_blocking(move || {
            let tree: reapi::Tree = store.get_message(&tree, "Tree")?;
            let checked = check_tree(&path, &tree, &limits, &mut budget)
                .map_err(|why| ExecError::Refused { from, why })?;
            Ok::<_, ExecError>((checked.files, budget))
        })
        .await
        .map_err(|e| ExecError::Task(e.to_string()))??;
        budget = used;
        blobs.extend(files);
    }
    download(blobs).await
}
