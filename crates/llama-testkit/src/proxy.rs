//! One fault-injecting HTTP/1.1 server for the tests: in front of a real server (s3s-fs,
//! cargo-lambda's emulator) it forwards what the test lets through and answers the rest with
//! the faults a cloud service produces (503 SlowDown, 429 throttling, a dropped connection, a
//! poll that never returns); with no upstream it serves canned answers only (a fake Runtime
//! API). What to do with each request is the test's [`Decide`] function.
//!
//! Forwarding is byte for byte: the request line and headers go upstream as received (the
//! `Host` header included: S3 signs it), with `Connection: close`, and the upstream's whole
//! response comes back unchanged. `Expect: 100-continue` is answered here, before the body is
//! read, and not forwarded. A chunked request body is decoded, and forwarded with a
//! `Content-Length` instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One request as the proxy read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/2018-06-01/runtime/invocation/next`, `/bucket/key?x`).
    pub path: String,
    /// Header lines as received, in order, without their line ends (`Name: value`).
    pub headers: Vec<String>,
    /// The body, decoded when it was chunked.
    pub body: Vec<u8>,
}

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Sends it to the upstream and its response back (panics without an upstream).
    Forward,
    /// Answers it here.
    Respond(Response),
    /// Never answers: holds the connection open for an hour, as a long poll does.
    Hold,
    /// Closes the connection without answering.
    Drop,
}

/// A response the proxy makes up.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header lines without `Content-Length`, which is added.
    pub headers: Vec<(String, String)>,
    /// Left out (its length still announced) when the request was a HEAD.
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, reason: &str) -> Response {
        Response {
            status,
            reason: reason.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Response {
        self.body = body.to_vec();
        self
    }

    /// S3's 503 SlowDown, which SDKs retry with backoff.
    pub fn s3_slow_down() -> Response {
        Response::new(503, "Slow Down")
            .header("Content-Type", "application/xml")
            .body(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                  <Message>Please reduce your request rate.</Message></Error>",
            )
    }

    fn to_bytes(&self, head: bool) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (k, v) in &self.headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut r = r.into_bytes();
        if !head {
            r.extend_from_slice(&self.body);
        }
        r
    }
}

/// Decides each request's fate: given how many requests came before it (over all
/// connections) and the request.
pub type Decide = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// The proxy, listening on a loopback port until the test binary exits (its threads are
/// detached; each test starts its own).
pub struct HttpProxy {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl HttpProxy {
    /// Listens on a free loopback port; forwards to `upstream` when `decide` says so.
    pub fn start(
        upstream: Option<SocketAddr>,
        decide: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> HttpProxy {
        Self::start_on(
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"),
            upstream,
            decide,
        )
    }

    /// [`start`](HttpProxy::start) on a listener the test bound itself.
    pub fn start_on(
        listener: TcpListener,
        upstream: Option<SocketAddr>,
        decide: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> HttpProxy {
        let addr = listener.local_addr().expect("the proxy's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let decide: Arc<Decide> = Arc::new(decide);
        let count = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (count, decide) = (count.clone(), decide.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &count, &*decide);
                });
            }
        });
        HttpProxy { addr, requests }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests have arrived so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves one keep-alive connection until the client closes it or a reply drops it.
fn serve(
    conn: TcpStream,
    upstream: Option<SocketAddr>,
    count: &AtomicUsize,
    decide: &Decide,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    while let Some(request) = read_request(&mut reader, &mut writer)? {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let head = request.method == "HEAD";
        match decide(n, &request) {
            Reply::Respond(response) => writer.write_all(&response.to_bytes(head))?,
            Reply::Forward => {
                let upstream = upstream.expect("Reply::Forward from an HttpProxy without upstream");
                writer.write_all(&forward(&request, upstream)?)?;
            }
            Reply::Hold => {
                std::thread::sleep(Duration::from_secs(3600));
                return Ok(());
            }
            Reply::Drop => return Ok(()),
        }
    }
    Ok(())
}

/// The next request on the connection, `None` when the client closed it. Answers
/// `Expect: 100-continue` before reading the body.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> std::io::Result<Option<Request>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let (mut length, mut chunked, mut expect) = (0usize, false, false);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if lower.starts_with("expect:") {
            expect |= lower.contains("100-continue");
            continue;
        }
        headers.push(line);
    }
    if expect {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    let mut parts = request_line.split_whitespace();
    Ok(Some(Request {
        method: parts.next().unwrap_or("").to_string(),
        path: parts.next().unwrap_or("").to_string(),
        headers,
        body,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Sends `request` to `upstream` on a fresh connection and returns its whole response.
fn forward(request: &Request, upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for line in &request.headers {
        let lower = line.to_ascii_lowercase();
        // The proxy decides how the connection and the body are framed upstream.
        if ["connection:", "transfer-encoding:", "content-length:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    let has_length = request
        .headers
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("content-length:"));
    if has_length || !request.body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&request.body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(response)
}
