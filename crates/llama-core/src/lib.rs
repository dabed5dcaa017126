//! The model of work shared by every part of llama.
//!
//! Not for running anything: executors, the engine and the network live in `llama-exec`,
//! front ends in `llama-cc` and `llama-cli`. This crate does no network I/O and spawns no
//! process.
//!
//! Every front end (llamacc, `llama invoke`, `llama xargs`) describes its job as an
//! [`ActionSpec`] over an [`InputTree`], which [`ActionSpec::prepare`] encodes as REAPI v2
//! `Command` and `Action` messages with SHA-256 [`Digest`]s. The same work always has the same
//! action digest, which is the key of the action cache.
//!
//! # Brief overview
//!
//! * [`Digest`]: SHA-256 and size, convertible to and from REAPI's message.
//! * [`TreeBuilder`] / [`InputTree`]: local files mapped to remote paths, as `Directory` messages.
//! * [`Store`]: the on-disk CAS and action cache, bounded, verified, multi-process safe.
//! * [`check_result_shape`] / [`check_tree`]: the checks on a result from elsewhere, before
//!   any of it is fetched or written.
//! * [`HashCache`]: stat-keyed memo of file digests, persisted between runs.
//! * [`Config`]: settings from `config.toml` and `LLAMA_*` variables, with their sources; each
//!   setting is a typed constant of [`keys`], read with [`Config::get`].
//! * [`platform`]: every `llama-*` platform property llama puts in an action.
//! * [`doctor`]: the outcome of one of `llama doctor`'s checks, whichever crate checks.
//!
//! # Example
//!
//! ```
//! use llama_core::{ActionSpec, Store, TreeBuilder};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store"), 1 << 30)?;
//! let mut tree = TreeBuilder::new();
//! tree.add_bytes(b"hello\n"[..].into(), "INPUT", false)?;
//! let action = ActionSpec {
//!     arguments: vec!["sha256sum".into(), "INPUT".into()],
//!     ..Default::default()
//! }
//! .prepare(tree.build())?;
//! store.put_message(&action.command)?;
//! assert_eq!(store.get_action_result(&action.action_digest)?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod action;
mod config;
mod digest;
pub mod doctor;
mod hashcache;
pub mod platform;
mod result;
mod store;
mod tree;

pub use crate::{
    action::{ActionSpec, PreparedAction, canonical_platform},
    config::{
        Backend, Config, ConfigError, FunctionPlatform, Source, keys, keys::Key, mask_secret,
    },
    digest::{Digest, Hasher, HashingWriter, ParseDigestError},
    hashcache::HashCache,
    platform::{FUNCTION_PROPERTY, STDIN_PROPERTY},
    result::{
        Budget, CheckedTree, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUT_NODES, MAX_TREE_DEPTH,
        MAX_TREE_MESSAGE_BYTES, Refusal, ResultLimits, check_result_shape, check_tree,
        result_digests,
    },
    store::{
        EVICTION_GRACE, LinkedInput, MAX_IN_MEMORY_BLOB, MIN_COMPRESSED, RecordKind, Store,
        StoreError, TOUCH_GRANULARITY, Usage, VerifyReport,
    },
    tree::{
        BadEscape, BlobSource, InputTree, NAME_ESCAPE, TreeBuilder, TreeError, decode_name,
        decode_os, display_name, encode_name, encode_os, escaped_name_in, normalize_remote,
        remote_components,
    },
};

/// The REAPI v2 messages llama uses as its model, re-exported for the other crates.
pub use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;

/// Protobuf well-known types (`Timestamp`, `Duration`) as the REAPI messages use them.
pub use bazel_remote_apis::google::protobuf;
