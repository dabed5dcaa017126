//! What the lambda executor and `llama-runtime` say to each other: one JSON [`Request`] per
//! Lambda invocation and one JSON [`Response`] back.
//!
//! JSON, because `lambda_runtime` events are JSON; binary fields (encoded protos, blob
//! contents) travel as base64 strings. A synchronous invocation carries at most
//! [`MAX_SYNC_PAYLOAD`] each way, so both sides inline small blobs, smallest first, while the
//! encoded message stays under [`INLINE_BUDGET`], and send the rest through the object store
//! (`s3://BUCKET/PREFIX/cas/<sha256>`).
//!
//! ```text
//! Request  { v: 1, action: b64 Action, action_digest: "hash/size",
//!            blobs: [{digest, data: b64}], store: {bucket, prefix} | null,
//!            inline_output_limit, timeout_ms }
//! Response { v: 1, result: b64 ActionResult, termination: {"Exited": 0} | {"Signaled": 9}
//!            | {"TimedOut": ms}, blobs: [{digest, data: b64}],
//!            timings: {fetch_ms, run_ms, upload_ms}, cold, memory_mb, runtime_version,
//!            s3_ops: {puts, gets, heads} }
//! ```

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use llama_core::{BlobSource, Digest, PreparedAction};
use prost::Message as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::executor::Termination;

/// The version of this format; a runtime refuses requests of another.
pub const WIRE_VERSION: u32 = 1;

/// Lambda's limit on a synchronous invocation's request and, separately, its response:
/// 6 MB. Past it the Invoke call fails (`RequestTooLargeException`) or the function's
/// answer is replaced by an error, so neither side may ever get near it.
pub const MAX_SYNC_PAYLOAD: u64 = 6 * 1024 * 1024;

/// Room kept for everything in a message that is not blob data: JSON field names and
/// punctuation, digests (about 80 bytes a blob), the encoded Action or ActionResult, the
/// timings. Generous, because overshooting costs an S3 round trip while undershooting costs
/// the invocation.
pub const PAYLOAD_HEADROOM: u64 = 512 * 1024;

/// Raw bytes of blob data one message may inline. Base64 turns every 3 bytes into 4, so
/// this is three quarters of what is left of the payload after the headroom (about 4.3 MiB).
pub const INLINE_BUDGET: u64 = (MAX_SYNC_PAYLOAD - PAYLOAD_HEADROOM) / 4 * 3;

/// Default largest single output the runtime returns inline. Bigger outputs go through S3
/// even when they would fit, so one large output does not push all the small ones out.
pub const DEFAULT_INLINE_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// What each inline blob costs in the message beyond its base64 data: the digest string
/// and the JSON around it.
pub const INLINE_BLOB_OVERHEAD: u64 = 100;

/// Bytes of the message an inlined blob of `size` raw bytes takes.
pub fn inline_cost(size: u64) -> u64 {
    size.div_ceil(3) * 4 + INLINE_BLOB_OVERHEAD
}

/// Chooses which of `sizes` to inline within `budget` message bytes: smallest first, as many
/// as fit, and none bigger than `max_each`. Returns the chosen indices in input order.
pub fn plan_inline(sizes: &[u64], budget: u64, max_each: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut left = budget;
    let mut chosen = Vec::new();
    for i in order {
        let cost = inline_cost(sizes[i]);
        if sizes[i] > max_each || cost > left {
            // Sorted by size: nothing after this fits either.
            break;
        }
        left -= cost;
        chosen.push(i);
    }
    chosen.sort_unstable();
    chosen
}

/// Bytes carried as a base64 string in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

impl std::fmt::Debug for Base64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Base64({} bytes)", self.0.len())
    }
}

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Base64)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// A blob carried in the message itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBlob {
    /// `hash/size`, as [`Digest`]'s `Display`.
    pub digest: String,
    /// The content.
    pub data: Base64,
}

impl InlineBlob {
    /// An inline blob of `data`, whose digest is `digest`.
    pub fn new(digest: &Digest, data: Vec<u8>) -> InlineBlob {
        InlineBlob {
            digest: digest.to_string(),
            data: Base64(data),
        }
    }

    /// The digest, checked against the data: a blob that does not match is refused.
    pub fn verified_digest(&self) -> Result<Digest, String> {
        let claimed: Digest = self
            .digest
            .parse()
            .map_err(|e| format!("inline blob digest {:?}: {e}", self.digest))?;
        let actual = Digest::of_bytes(&self.data.0);
        if actual != claimed {
            return Err(format!(
                "inline blob {claimed} does not match its content (which hashes to {actual})"
            ));
        }
        Ok(claimed)
    }
}

/// Where blobs that are not inline live: `s3://bucket/prefix/cas/<sha256>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreLocation {
    /// The S3 bucket.
    pub bucket: String,
    /// Key prefix inside it, without leading or trailing `/` ("" for none).
    pub prefix: String,
}

/// One invocation: run this action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// The encoded REAPI `Action`.
    pub action: Base64,
    /// The Action's digest (`hash/size`): the action-cache key.
    pub action_digest: String,
    /// The Command, Directories, stdin and input files that fit, smallest first.
    pub blobs: Vec<InlineBlob>,
    /// Where every blob not inline is, and where outputs that do not fit go. `None`: all
    /// inputs are inline and all outputs must fit in the response.
    pub store: Option<StoreLocation>,
    /// Largest output the response may carry inline.
    pub inline_output_limit: u64,
    /// The deadline of the command, when the Action sets none itself.
    pub timeout_ms: Option<u64>,
}

impl Request {
    /// A request carrying every blob inline and naming no object store, for a runtime
    /// without S3 (tests, tools). Reads file inputs synchronously; fails when a file cannot
    /// be read or no longer matches its digest.
    pub fn everything_inline(action: &PreparedAction) -> std::io::Result<Request> {
        let mut blobs = vec![InlineBlob::new(
            &action.command_digest,
            action.command.encode_to_vec(),
        )];
        for (digest, bytes) in &action.input.directories {
            blobs.push(InlineBlob::new(digest, bytes.clone()));
        }
        let sources = action
            .input
            .files
            .iter()
            .chain(action.stdin.iter().map(|(d, s)| (d, s)));
        for (digest, source) in sources {
            let data = match source {
                BlobSource::Bytes(data) => data.to_vec(),
                BlobSource::File(path) => std::fs::read(path)?,
            };
            if Digest::of_bytes(&data) != *digest {
                return Err(std::io::Error::other(format!(
                    "an input changed since it was hashed (expected {digest})"
                )));
            }
            blobs.push(InlineBlob::new(digest, data));
        }
        Ok(Request {
            v: WIRE_VERSION,
            action: Base64(action.action.encode_to_vec()),
            action_digest: action.action_digest.to_string(),
            blobs,
            store: None,
            inline_output_limit: DEFAULT_INLINE_OUTPUT_LIMIT,
            timeout_ms: None,
        })
    }
}

/// How the command ended, as [`Termination`] says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireTermination {
    /// It exited with this code.
    Exited(i32),
    /// This signal killed it.
    Signaled(i32),
    /// It was killed at its deadline, after this many milliseconds.
    TimedOut(u64),
}

impl From<Termination> for WireTermination {
    fn from(t: Termination) -> Self {
        match t {
            Termination::Exited(code) => WireTermination::Exited(code),
            Termination::Signaled(sig) => WireTermination::Signaled(sig),
            Termination::TimedOut(after) => {
                WireTermination::TimedOut(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

impl From<WireTermination> for Termination {
    fn from(t: WireTermination) -> Self {
        match t {
            WireTermination::Exited(code) => Termination::Exited(code),
            WireTermination::Signaled(sig) => Termination::Signaled(sig),
            WireTermination::TimedOut(ms) => Termination::TimedOut(Duration::from_millis(ms)),
        }
    }
}

/// Where the invocation's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Decoding the request and getting every input into the blob cache.
    pub fetch_ms: u64,
    /// Laying out the inputs, running the command, collecting its outputs.
    pub run_ms: u64,
    /// Uploading outputs and the action-cache entry.
    pub upload_ms: u64,
    /// Everything but the command itself (decoding, fetching, laying out the inputs,
    /// collecting and uploading the outputs), in microseconds: what the runtime adds to an
    /// action. 0 from a runtime older than this field.
    #[serde(default)]
    pub overhead_us: u64,
}

impl Timings {
    /// The whole invocation as the runtime saw it.
    pub fn total_ms(&self) -> u64 {
        self.fetch_ms + self.run_ms + self.upload_ms
    }
}

/// S3 requests the runtime made for one invocation (they are billed too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Ops {
    /// PUT-class requests (PutObject and the multipart calls).
    pub puts: u64,
    /// GetObject requests.
    pub gets: u64,
    /// HeadObject requests.
    pub heads: u64,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// The encoded REAPI `ActionResult`.
    pub result: Base64,
    /// How the command ended.
    pub termination: WireTermination,
    /// Outputs (stdout, stderr, files, output-directory trees) that fit, smallest first; the
    /// others are in the object store.
    pub blobs: Vec<InlineBlob>,
    /// Where the time went.
    pub timings: Timings,
    /// True on the first invocation of this runtime process (a cold start).
    pub cold: bool,
    /// The function's memory size (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), which prices it.
    pub memory_mb: u32,
    /// The runtime's version.
    pub runtime_version: String,
    /// S3 requests the runtime made.
    pub s3_ops: S3Ops,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_base64_growth_and_stays_under_the_limit() {
        // A request filled to the budget, with the largest Action we would send, encodes
        // under Lambda's limit.
        const { assert!(INLINE_BUDGET / 3 * 4 + PAYLOAD_HEADROOM <= MAX_SYNC_PAYLOAD) };
        let blob = vec![0xabu8; 1_000_000];
        let n = (INLINE_BUDGET / inline_cost(blob.len() as u64)) as usize;
        let request = Request {
            v: WIRE_VERSION,
            action: Base64(vec![7; 300]),
            action_digest: Digest::of_bytes(b"a").to_string(),
            blobs: (0..n)
                .map(|_| InlineBlob::new(&Digest::of_bytes(&blob), blob.clone()))
                .collect(),
            store: None,
            inline_output_limit: DEFAULT_INLINE_OUTPUT_LIMIT,
            timeout_ms: Some(1),
        };
        let json = serde_json::to_vec(&request).unwrap();
        assert!(json.len() as u64 <= MAX_SYNC_PAYLOAD - PAYLOAD_HEADROOM / 2);
        assert_eq!(n, 3, "a 4.3 MiB budget holds three 1 MB blobs");
    }

    #[test]
    fn smallest_first_as_many_as_fit() {
        let sizes = [500, 10, 3000, 20, 100];
        // Everything fits.
        assert_eq!(plan_inline(&sizes, 1 << 20, u64::MAX), vec![0, 1, 2, 3, 4]);
        // Only the small ones fit.
        let budget = inline_cost(10) + inline_cost(20) + inline_cost(100) + 5;
        assert_eq!(plan_inline(&sizes, budget, u64::MAX), vec![1, 3, 4]);
        // A per-blob limit excludes big ones however much room there is.
        assert_eq!(plan_inline(&sizes, 1 << 20, 100), vec![1, 3, 4]);
        assert!(plan_inline(&sizes, 0, u64::MAX).is_empty());
    }

    #[test]
    fn round_trips_and_refuses_lies() {
        let response = Response {
            v: WIRE_VERSION,
            result: Base64(vec![1, 2, 3]),
            termination: WireTermination::TimedOut(1500),
            blobs: vec![InlineBlob::new(&Digest::of_bytes(b"out"), b"out".to_vec())],
            timings: Timings {
                fetch_ms: 1,
                run_ms: 2,
                upload_ms: 3,
                overhead_us: 4,
            },
            cold: true,
            memory_mb: 1769,
            runtime_version: "0.1.0".into(),
            s3_ops: S3Ops::default(),
        };
        let json = serde_json::to_string(&response).unwrap();
        assert!(
            json.contains(r#""termination":{"TimedOut":1500}"#),
            "{json}"
        );
        assert!(json.contains(r#""result":"AQID""#), "{json}");
        let back: Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back, response);
        assert_eq!(
            Termination::from(back.termination),
            Termination::TimedOut(Duration::from_millis(1500))
        );
        assert!(back.blobs[0].verified_digest().is_ok());
        let lie = InlineBlob {
            digest: Digest::of_bytes(b"x").to_string(),
            data: Base64(b"y".to_vec()),
        };
        assert!(
            lie.verified_digest()
                .unwrap_err()
                .contains("does not match")
        );
        let bad: Result<Response, _> = serde_json::from_str(&json.replace("AQID", "not base64!"));
        assert!(bad.is_err());
    }
}
