//! The daemon's protocol: length-prefixed, versioned frames of postcard-encoded messages
//! over a Unix socket. One request, one response; a connection may carry several.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a daemon speaking another version is replaced.
pub const PROTOCOL_VERSION: u32 = 3;

const MAGIC: [u8; 4] = *b"LLMA";

/// Magic, version, payload length.
pub const HEADER_LEN: usize = 12;

/// A payload is read in pieces of at most this much, so memory follows the bytes that
/// actually arrive, never the length a header claims.
const READ_CHUNK: usize = 64 << 10;

/// A message of the protocol, with the largest frame it may come in.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Frames claiming more are refused before any of the payload is read.
    const MAX_FRAME: usize;
}

impl Message for Request {
    /// Argv and environment together are bounded by the kernel's `ARG_MAX` (at most 6 MiB
    /// on Linux, whatever the stack limit), and llamacc sends only part of its environment.
    const MAX_FRAME: usize = 16 << 20;
}

impl Message for Response {
    /// Compiler diagnostics can be long (template errors); they fit many times over.
    const MAX_FRAME: usize = 256 << 20;
}

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Compile (or tell how to).
    Compile(CompileRequest),
    /// Who is running.
    Status,
    /// The counters, as JSON.
    Stats,
    /// Zero the counters.
    ResetStats,
    /// Finish what is running and exit.
    Shutdown,
}

/// One compile, as the client saw it: the daemon's compile service takes exactly this.
/// Arguments, paths and variables are the client's bytes (they need not be UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileRequest {
    /// Invoked as a C++ driver (`llamac++`, or a C++ compiler's name) rather than `llamacc`.
    pub cxx: bool,
    /// The compiler by absolute path, when the launcher form (`llamacc gcc ...`) or a
    /// masquerading link named it ([`crate::launcher`]); `None`: the one `LLAMACC_LOCAL_CC`
    /// / `LLAMACC_LOCAL_CXX` name.
    pub compiler: Option<OsString>,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
    /// The client's working directory.
    #[serde(with = "os_path")]
    pub cwd: PathBuf,
    /// The part of the client's environment a compile can depend on
    /// ([`crate::needed_by_compile`]).
    pub env: Vec<(OsString, OsString)>,
    /// The client's file-creation mask, applied to the files delivered.
    pub umask: u32,
}

/// What the client does next: the compile service's answer, as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CompileReply {
    /// The compile is done (from the cache or run now): print these and exit with the code.
    Done {
        /// The compiler's exit status.
        exit_code: i32,
        /// The compiler's standard output.
        stdout: Vec<u8>,
        /// The compiler's standard error (diagnostics).
        stderr: Vec<u8>,
        /// Served from the cache.
        cached: bool,
        /// Lines for llamacc to print on its stderr first (warnings of llama's own).
        notes: Vec<String>,
    },
    /// Run this compiler with these arguments directly, in place of llamacc.
    RunLocally {
        /// The compiler, as named (the client resolves it in its own PATH).
        program: OsString,
        /// Its arguments.
        args: Vec<OsString>,
        /// Why it is not cached (for `LLAMACC_VERBOSE`).
        reason: String,
        /// Lines for llamacc to print on its stderr first.
        notes: Vec<String>,
    },
}

/// A path as its bytes: serde's own `PathBuf` support refuses paths that are not UTF-8.
mod os_path {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        path.as_os_str().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        OsString::deserialize(d).map(PathBuf::from)
    }
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The answer to a compile.
    Compiled(CompileReply),
    /// Who is running.
    Status {
        /// The daemon's process id.
        pid: u32,
        /// Its llama version.
        version: String,
        /// How long it has run.
        uptime_secs: u64,
        /// Compiles it has answered.
        compiles: u64,
        /// The socket it listens on.
        socket: String,
        /// Its store directory.
        dir: String,
    },
    /// The counters, as JSON.
    Stats(String),
    /// Done.
    Ok,
    /// The daemon speaks another protocol version.
    VersionMismatch {
        /// The version the daemon speaks.
        daemon: u32,
    },
}

/// Writes one frame.
pub fn write_frame<T: Message>(w: &mut impl Write, message: &T) -> io::Result<()> {
    let payload = postcard::to_allocvec(message).map_err(io::Error::other)?;
    if payload.len() > T::MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a {} byte message is over the daemon protocol's limit of {} bytes",
                payload.len(),
                T::MAX_FRAME
            ),
        ));
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    w.write_all(&frame)?;
    w.flush()
}

/// The header of a frame carrying a `T`: its protocol version and payload length.
pub fn parse_header<T: Message>(header: &[u8; HEADER_LEN]) -> io::Result<(u32, usize)> {
    if header[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a llama daemon frame",
        ));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > T::MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a daemon frame claims {len} bytes, over the limit of {}",
                T::MAX_FRAME
            ),
        ));
    }
    Ok((version, len))
}

/// An empty buffer for a payload of `len` bytes: it grows as bytes arrive (see
/// [`READ_CHUNK`]), so a header that lies about the length costs nothing.
pub fn payload_buffer(len: usize) -> Vec<u8> {
    Vec::with_capacity(len.min(READ_CHUNK))
}

/// The error for a payload that ended after `got` of its `len` bytes.
pub fn short_payload(got: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("a daemon frame ended after {got} of its {len} bytes"),
    )
}

/// Decodes a payload.
pub fn decode<T: Message>(payload: &[u8]) -> io::Result<T> {
    postcard::from_bytes(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one frame (blocking), returning the sender's protocol version and the message.
pub fn read_frame<T: Message>(r: &mut impl Read) -> io::Result<(u32, T)> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let (version, len) = parse_header::<T>(&header)?;
    let mut payload = payload_buffer(len);
    r.by_ref().take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(short_payload(payload.len(), len));
    }
    Ok((version, decode(&payload)?))
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;

    /// The system allocator, recording the largest single allocation a thread makes while
    /// it asks to be watched: the proof that reading a frame allocates what arrived, not
    /// what a header claims.
    struct Watching;

    thread_local! {
        // Const-initialised with no destructor: reading it never allocates.
        static WATCHED: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn record(size: usize) {
        WATCHED.with(|w| {
            if let Some(largest) = w.get() {
                w.set(Some(largest.max(size)));
            }
        });
    }

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Watching {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            record(new_size);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Watching = Watching;

    /// Runs `f`, returning its result and the largest allocation it made on this thread.
    fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        WATCHED.with(|w| w.set(Some(0)));
        let result = f();
        let largest = WATCHED.with(|w| w.replace(None)).unwrap_or(0);
        (result, largest)
    }

    /// What reading `input` may allocate at most: the payload as it grows (doubling past
    /// what arrived), plus serde's cap on preallocating a sequence whose length the
    /// payload claims (1 MiB).
    fn allocation_bound(input: &[u8]) -> usize {
        READ_CHUNK + 2 * input.len() + (1 << 20)
    }

    fn frame_of<T: Message>(message: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, message).expect("a frame in memory");
        buf
    }

    #[test]
    fn frames_round_trip() {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};

        let buf = frame_of(&Request::Compile(CompileRequest {
            cxx: true,
            compiler: None,
            args: vec!["-c".into(), OsString::from_vec(vec![0xff, 0xfe])],
            cwd: PathBuf::from(OsString::from_vec(b"/tmp/\xff".to_vec())),
            env: vec![("A".into(), "1".into())],
            umask: 0o022,
        }));
        let (version, req): (u32, Request) = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(version, PROTOCOL_VERSION);
        let Request::Compile(msg) = req else {
            panic!("expected a compile")
        };
        assert_eq!(msg.args[1].as_bytes(), [0xff, 0xfe]);
        // Paths need not be UTF-8 either.
        assert_eq!(msg.cwd.as_os_str().as_bytes(), b"/tmp/\xff");
        assert!(read_frame::<Request>(&mut &b"HTTP/1.1 200"[..]).is_err());
    }

    #[test]
    fn the_watch_sees_a_large_allocation() {
        let (v, largest) = largest_allocation(|| Vec::<u8>::with_capacity(3 << 20));
        assert!(v.capacity() >= 3 << 20);
        assert!(largest >= 3 << 20, "{largest}");
    }

    #[test]
    fn a_header_claiming_the_limit_over_a_short_reader_allocates_what_arrived() {
        for claimed in [Request::MAX_FRAME, Response::MAX_FRAME] {
            let mut input = Vec::from(MAGIC);
            input.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            input.extend_from_slice(&(claimed as u32).to_le_bytes());
            input.extend_from_slice(&[0u8; 100]);
            let (result, largest) =
                largest_allocation(|| read_frame::<Response>(&mut &input[..]).map(|_| ()));
            let err = result.expect_err("a short payload");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
            assert!(largest <= READ_CHUNK, "allocated {largest} bytes");
        }
        // Over a request's limit: refused before reading, whatever follows.
        let mut input = Vec::from(MAGIC);
        input.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        input.extend_from_slice(&((Request::MAX_FRAME + 1) as u32).to_le_bytes());
        let err = read_frame::<Request>(&mut &input[..])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn os(max: usize) -> impl Strategy<Value = OsString> {
        use std::os::unix::ffi::OsStringExt;
        bytes(max).prop_map(OsString::from_vec)
    }

    fn request() -> impl Strategy<Value = Request> {
        let compile = (
            (any::<bool>(), proptest::option::of(os(24))),
            proptest::collection::vec(os(24), 0..8),
            os(32).prop_map(PathBuf::from),
            proptest::collection::vec((os(12), os(24)), 0..6),
            any::<u32>(),
        )
            .prop_map(|((cxx, compiler), args, cwd, env, umask)| {
                Request::Compile(CompileRequest {
                    cxx,
                    compiler,
                    args,
                    cwd,
                    env,
                    umask,
                })
            });
        prop_oneof![
            compile,
            Just(Request::Status),
            Just(Request::Stats),
            Just(Request::ResetStats),
            Just(Request::Shutdown),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        let done = (any::<i32>(), bytes(64), bytes(64), any::<bool>(), ".{0,16}").prop_map(
            |(exit_code, stdout, stderr, cached, note)| {
                Response::Compiled(CompileReply::Done {
                    exit_code,
                    stdout,
                    stderr,
                    cached,
                    notes: vec![note],
                })
            },
        );
        let run_locally = (os(16), proptest::collection::vec(os(16), 0..4), ".{0,16}").prop_map(
            |(program, args, reason)| {
                Response::Compiled(CompileReply::RunLocally {
                    program,
                    args,
                    reason,
                    notes: Vec::new(),
                })
            },
        );
        prop_oneof![
            done,
            run_locally,
            ".{0,32}".prop_map(Response::Stats),
            Just(Response::Ok),
            any::<u32>().prop_map(|daemon| Response::VersionMismatch { daemon }),
        ]
    }

    /// One damage done to a valid frame.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// Replace the byte at (index modulo the length).
        Set(usize, u8),
        /// Keep only this many bytes (modulo the length).
        Truncate(usize),
        /// Claim another payload length.
        Length(u32),
        /// Append junk.
        Append(Vec<u8>),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            prop_oneof![any::<u32>(), 0u32..4096, Just(u32::MAX)].prop_map(Mutation::Length),
            bytes(64).prop_map(Mutation::Append),
        ]
    }

    fn mutate(mut frame: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            match m {
                Mutation::Set(i, b) => {
                    if !frame.is_empty() {
                        let i = i % frame.len();
                        frame[i] = *b;
                    }
                }
                Mutation::Truncate(n) => frame.truncate(n % (frame.len() + 1)),
                Mutation::Length(len) => {
                    if frame.len() >= HEADER_LEN {
                        frame[8..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
                    }
                }
                Mutation::Append(junk) => frame.extend_from_slice(junk),
            }
        }
        frame
    }

    /// Decodes `input` as both kinds of message: an error or a message, never a panic,
    /// and never more memory than the bound.
    fn decodes_within_bounds(input: &[u8]) -> Result<(), TestCaseError> {
        let (_, largest) = largest_allocation(|| read_frame::<Request>(&mut &input[..]).ok());
        prop_assert!(
            largest <= allocation_bound(input),
            "request: {largest} bytes"
        );
        let (_, largest) = largest_allocation(|| read_frame::<Response>(&mut &input[..]).ok());
        prop_assert!(
            largest <= allocation_bound(input),
            "response: {largest} bytes"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_decode_to_an_error_or_a_message(
            input in prop_oneof![
                bytes(256),
                // Mostly a valid header, so the payload decoder is reached.
                (bytes(16), any::<u32>()).prop_map(|(tail, len)| {
                    let mut v = Vec::from(MAGIC);
                    v.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
                    v.extend_from_slice(&(len % 512).to_le_bytes());
                    v.extend_from_slice(&tail);
                    v
                }),
            ]
        ) {
            decodes_within_bounds(&input)?;
        }

        #[test]
        fn mutated_frames_decode_to_an_error_or_a_message(
            req in request(),
            resp in response(),
            mutations in proptest::collection::vec(mutation(), 0..4),
        ) {
            let req_frame = frame_of(&req);
            let resp_frame = frame_of(&resp);
            if mutations.is_empty() {
                // Undamaged, each reads back as the message it was.
                let (_, back) = read_frame::<Request>(&mut &req_frame[..]).expect("request");
                prop_assert_eq!(format!("{back:?}"), format!("{req:?}"));
                let (_, back) = read_frame::<Response>(&mut &resp_frame[..]).expect("response");
                prop_assert_eq!(format!("{back:?}"), format!("{resp:?}"));
            }
            decodes_within_bounds(&mutate(req_frame, &mutations))?;
            decodes_within_bounds(&mutate(resp_frame, &mutations))?;
        }
    }
}
