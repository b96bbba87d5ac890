//! Just enough HTTP/1.1 for webhooks, with hard limits: one request per connection, the head
//! parsed by `httparse`, a `Content-Length` body only, and deadlines on every read.
//!
//! Why not tiny_http: it has no read timeouts and no hook to set them on accepted connections,
//! and its thread pool grows without bound, so a slowloris client pins a thread forever. Owning
//! the accept loop keeps both the deadlines and the connection bound in one place.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Largest request head (request line and headers) read before answering 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request; forges send about 15.
const MAX_HEADERS: usize = 64;
/// How long a response may take to write before the client is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After an answer, unread request bytes are drained for at most this long (and this much),
/// so the client reads our answer instead of a connection reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// A request head: method, path (query removed) and headers with lower-case names.
#[derive(Debug)]
pub struct Head {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without `?query`.
    pub path: String,
    /// Headers in arrival order, names lower-cased; values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// Body bytes that arrived with the head.
    leftover: Vec<u8>,
}

impl Head {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why no request came out of a connection.
#[derive(Debug)]
pub enum ReadError {
    /// Too slow, closed, or broken: drop the connection without an answer.
    Dropped(String),
    /// The request is unacceptable: answer this, then close.
    Reject(Response),
}

/// Read and parse the request head; it must be complete within `timeout` of the call.
pub fn read_head(stream: &mut TcpStream, timeout: Duration) -> Result<Head, ReadError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(stream, &mut chunk, deadline, "request head", timeout)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf).map_err(ReadError::Reject)? {
            return Ok(head);
        }
    }
}

/// Parse the bytes received so far: a complete head, `None` to read on, or the answer refusing it.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            method: request.method.unwrap_or_default().to_string(),
            path: request.path.unwrap_or_default().split('?').next().unwrap_or_default().to_string(),
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            leftover: buf.get(len..).unwrap_or_default().to_vec(),
        })),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Err(Response::error(
            431,
            format!("request head larger than {MAX_HEAD} bytes or more than {MAX_HEADERS} headers"),
        )),
        Err(e) => Err(Response::error(400, format!("malformed HTTP request: {e}"))),
    }
}

/// The body length a head announces, if acceptable: `Content-Length` only, once, at most `max_body`.
pub fn body_length(head: &Head, max_body: usize) -> Result<usize, Response> {
    // Refusing Transfer-Encoding (and conflicting lengths) closes the door on request smuggling
    // through a proxy; forges send Content-Length.
    if head.header("transfer-encoding").is_some() {
        return Err(Response::error(411, "Transfer-Encoding is not supported; send the body with Content-Length"));
    }
    let mut lengths = head.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.trim());
    let Some(first) = lengths.next() else {
        return Err(Response::error(411, "Content-Length is required"));
    };
    if lengths.any(|other| other != first) {
        return Err(Response::error(400, "conflicting Content-Length headers"));
    }
    let length = match first.parse::<u64>() {
        Ok(n) if first.bytes().all(|b| b.is_ascii_digit()) => usize::try_from(n).unwrap_or(usize::MAX),
        _ => return Err(Response::error(400, format!("Content-Length {first:?} is not a number"))),
    };
    if length > max_body {
        return Err(Response::error(
            413,
            format!("body of {length} bytes is larger than the limit of {max_body} bytes (--max-body-size)"),
        ));
    }
    Ok(length)
}

/// Read the body announced by `Content-Length`: at most `max_body` bytes, all within `timeout`.
pub fn read_body(stream: &mut TcpStream, head: Head, max_body: usize, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    let length = body_length(&head, max_body).map_err(ReadError::Reject)?;
    if head.header("expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue")) {
        write_all(stream, b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|e| ReadError::Dropped(format!("writing 100 Continue: {e}")))?;
    }
    let deadline = Instant::now() + timeout;
    let mut body = head.leftover;
    // Bytes past Content-Length would be a second (pipelined) request, which is not served.
    body.truncate(length);
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..want], deadline, "request body", timeout)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

/// One read that must finish before `deadline`; a slow or silent client is dropped.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
    timeout: Duration,
) -> Result<usize, ReadError> {
    let too_slow = || ReadError::Dropped(format!("{what} not received within {timeout:?}"));
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(too_slow());
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| ReadError::Dropped(format!("setting a read timeout: {e}")))?;
        match stream.read(buf) {
            Ok(0) => {
                return Err(ReadError::Dropped(format!("client closed before the {what} was complete")));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(too_slow());
            }
            Err(e) => return Err(ReadError::Dropped(format!("reading the {what}: {e}"))),
        }
    }
}

fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(bytes)?;
    stream.flush()
}

/// A JSON response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    extra_headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A response with this status and JSON body.
    pub fn json(status: u16, body: Value) -> Response {
        Response { status, body, extra_headers: Vec::new() }
    }

    /// `{"error": message}` with this status.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, json!({ "error": message.into() }))
    }

    /// Add a header (e.g. `Retry-After`, `Allow`).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.extra_headers.push((name, value.into()));
        self
    }

    /// The `error` or `result` field, for the log line.
    pub fn summary(&self) -> String {
        let field = self.body.get("error").or_else(|| self.body.get("result"));
        match field.and_then(Value::as_str) {
            Some(text) => format!("{} {text}", self.status),
            None => self.status.to_string(),
        }
    }

    /// Write the response (without body for HEAD) and close the connection, draining what the
    /// client may still be sending so that it sees this answer rather than a reset.
    pub fn send(&self, mut stream: TcpStream, head_only: bool) {
        let body = self.body.to_string();
        let mut text = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            body.len()
        );
        for (name, value) in &self.extra_headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        if !head_only {
            text.push_str(&body);
        }
        if let Err(e) = write_all(&mut stream, text.as_bytes()) {
            log::debug!("writing a {} response: {e}", self.status);
            return;
        }
        linger(stream);
    }
}

/// Half-close and discard input until the client closes, within LINGER_TIME and LINGER_BYTES.
fn linger(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    let mut chunk = [0u8; 16 * 1024];
    while drained < LINGER_BYTES {
        match read_some(&mut stream, &mut chunk, deadline, "rest of the request", LINGER_TIME) {
            Ok(n) => drained += n,
            Err(_) => break,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}
