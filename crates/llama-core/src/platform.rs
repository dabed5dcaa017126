//! Every `llama-*` REAPI platform property llama puts in an action, in one place.
//!
//! Platform properties are part of the action digest: each one here separates results that
//! must not be served for one another. The names are part of the cache key, so changing one
//! invalidates every cached result that carries it.

/// Names the FUNCTION (the Lambda function, REAPI platform or local label) an action runs
/// on, so results of one function are never served for another.
pub const FUNCTION_PROPERTY: &str = "llama-function";

/// The digest of the blob fed to the command's standard input. REAPI has no stdin; llama's
/// own executors honour this property.
pub const STDIN_PROPERTY: &str = "llama-stdin";

/// The identity (digest) of the compiler a remote compile runs.
pub const COMPILER_PROPERTY: &str = "llama-compiler";

/// The working directory of a remote compile, which the compiler may write into its output
/// (debug info, `__FILE__`).
pub const CWD_PROPERTY: &str = "llama-cwd";

/// The digest of the system header directories a remote compile searches.
pub const SYSTEM_HEADERS_PROPERTY: &str = "llama-system-headers";

/// The logical `$PWD` of a compile: two compiles that differ only in it write different
/// objects, so the action's key must tell them apart.
pub const PWD_PROPERTY: &str = "llama-pwd";

/// The digest of which probed files were absent and which present (`__has_include`), which
/// decides the result as much as the content of the inputs.
pub const PROBES_PROPERTY: &str = "llama-probes";
