//! The daemon's protocol: length-prefixed, versioned frames of postcard-encoded messages
//! over a Unix socket. One request, one response; a connection may carry several.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a daemon speaking another version is replaced.
pub const PROTOCOL_VERSION: u32 = 1;

const MAGIC: [u8; 4] = *b"LLMA";

/// Frames larger than this are refused (a compile's diagnostics fit many times over).
const MAX_FRAME: usize = 256 << 20;

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Compile (or tell how to).
    Compile(CompileMsg),
    /// Who is running.
    Status,
    /// The counters, as JSON.
    Stats,
    /// Zero the counters.
    ResetStats,
    /// Finish what is running and exit.
    Shutdown,
}

/// One compile, as the client saw it. Paths and arguments are raw bytes: they need not be
/// UTF-8.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompileMsg {
    pub cxx: bool,
    pub args: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    pub umask: u32,
}

/// What the daemon answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The compile is done: print and exit with the code.
    Done {
        exit_code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        cached: bool,
        notes: Vec<String>,
    },
    /// Run this compiler directly.
    RunLocally {
        program: Vec<u8>,
        args: Vec<Vec<u8>>,
        reason: String,
        notes: Vec<String>,
    },
    /// Who is running.
    Status {
        pid: u32,
        version: String,
        uptime_secs: u64,
        compiles: u64,
        socket: String,
        dir: String,
    },
    /// The counters, as JSON.
    Stats(String),
    /// Done.
    Ok,
    /// The daemon speaks another protocol version.
    VersionMismatch { daemon: u32 },
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> io::Result<()> {
    let payload = postcard::to_allocvec(message).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(12 + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    w.write_all(&frame)?;
    w.flush()
}

/// The header of a frame: its protocol version and payload length.
pub fn parse_header(header: &[u8; 12]) -> io::Result<(u32, usize)> {
    if header[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a llama daemon frame",
        ));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok((version, len))
}

/// Reads one frame (blocking), returning the sender's protocol version and the message.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<(u32, T)> {
    let mut header = [0u8; 12];
    r.read_exact(&mut header)?;
    let (version, len) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    let message = postcard::from_bytes(&payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((version, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Request::Compile(CompileMsg {
                cxx: true,
                args: vec![b"-c".to_vec(), vec![0xff, 0xfe]],
                cwd: b"/tmp".to_vec(),
                env: vec![(b"A".to_vec(), b"1".to_vec())],
                umask: 0o022,
            }),
        )
        .unwrap();
        let (version, req): (u32, Request) = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(version, PROTOCOL_VERSION);
        let Request::Compile(msg) = req else {
            panic!("expected a compile")
        };
        assert_eq!(msg.args[1], vec![0xff, 0xfe]);
        assert!(read_frame::<Request>(&mut &b"HTTP/1.1 200"[..]).is_err());
    }
}
