//! A deliberately tiny HTTP/1.1 layer on `std::net`: request parsing, response writing, a
//! thread-per-connection server and a blocking one-shot client. Every response is sent with
//! `Connection: close`; ordinary ones with `Content-Length`, endless ones (the fake engine's
//! playback) with `Transfer-Encoding: chunked`, which `open_stream` reads back.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Upper bound on a request head or body; the fakes only ever see tiny requests.
const MAX_BYTES: usize = 64 * 1024;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query string, not percent-decoded.
    pub path: String,
    /// Query pairs in order, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Builds a request from a method and a target such as `/a/b?x=1` (handy in tests).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = split_target(target);
        Request {
            method: method.to_string(),
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the body (builder style, for tests).
    pub fn with_body(mut self, body: &str) -> Request {
        self.body = body.as_bytes().to_vec();
        self
    }

    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// First query value with this key.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response to write, plus what the server does after writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body and content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.into(),
        }
    }

    /// `application/json` response.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "application/json", body.into())
    }

    /// `text/plain` response; a newline is appended like Go's `http.Error`.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Serialises status line, headers and body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let framing = format!("Content-Length: {}", self.body.len());
        let mut bytes = self.head(&framing).into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Status line and headers of a chunked response (the body is ignored).
    pub fn chunked_head(&self) -> Vec<u8> {
        self.head("Transfer-Encoding: chunked").into_bytes()
    }

    fn head(&self, framing: &str) -> String {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("{framing}\r\nConnection: close\r\n\r\n"));
        out
    }
}

/// The body of an endless response: each call blocks as long as it likes and returns the next
/// chunk, or `None` to end the body.
pub type ChunkSource = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// What a handler wants done with a connection.
pub enum Reply {
    /// Write the response and close.
    Send(Response),
    /// Write the response, then exit the whole process with this code.
    SendThenExit(Response, i32),
    /// Never answer: keep the connection open and idle (a hung server).
    Hang,
    /// Write the head with `Transfer-Encoding: chunked`, then every chunk the source yields until
    /// it ends or the client goes away.
    Stream(Response, ChunkSource),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Send(r) => f.debug_tuple("Send").field(r).finish(),
            Reply::SendThenExit(r, code) => {
                f.debug_tuple("SendThenExit").field(r).field(code).finish()
            }
            Reply::Hang => f.write_str("Hang"),
            Reply::Stream(r, _) => f.debug_tuple("Stream").field(r).finish(),
        }
    }
}

/// Standard reason phrase for the codes the fakes use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Splits `/p?a=1&b` into the path and decoded query pairs.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, qs) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = qs
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect();
    (path.to_string(), query)
}

/// Decodes `%XX` escapes and `+` as space; malformed escapes are kept verbatim.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one request (head and `Content-Length` body) from a stream.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Request> {
    let mut line = String::new();
    let mut total = 0;
    let mut next_line = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = reader.by_ref().take(MAX_BYTES as u64).read_line(line)?;
        total += n;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        }
        if total > MAX_BYTES {
            return Err(bad("request head too large"));
        }
        Ok(())
    };
    next_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m.to_string(), t.to_string(), v),
        _ => return Err(bad("malformed request line")),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("unsupported HTTP version"));
    }
    let mut headers = Vec::new();
    loop {
        next_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("malformed header"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().map_err(|_| bad("bad content-length")))
        .transpose()?
        .unwrap_or(0);
    if len > MAX_BYTES {
        return Err(bad("request body too large"));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, query) = split_target(&target);
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Serves forever: one thread per connection, each answered by `handler`.
pub fn serve<H>(listener: TcpListener, handler: H) -> !
where
    H: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let handler = Arc::clone(&handler);
        thread::spawn(move || handle_connection(stream, &*handler));
    }
}

fn handle_connection<H: Fn(&Request) -> Reply>(mut stream: TcpStream, handler: &H) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = match read_request(&mut BufReader::new(&stream)) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let _ = stream.write_all(&Response::text(400, &e.to_string()).to_bytes());
            return;
        }
        Err(_) => return,
    };
    match handler(&request) {
        Reply::Send(resp) => {
            let _ = stream.write_all(&resp.to_bytes());
            let _ = stream.flush();
        }
        Reply::SendThenExit(resp, code) => {
            let _ = stream.write_all(&resp.to_bytes());
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            std::process::exit(code);
        }
        Reply::Hang => loop {
            // Keep `stream` alive and unanswered for good.
            thread::park();
        },
        Reply::Stream(head, mut source) => {
            // A reader that stops reading must not pin this thread for good.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            let _ = write_chunks(&mut stream, &head, &mut source);
        }
    }
}

fn write_chunks(out: &mut impl Write, head: &Response, source: &mut ChunkSource) -> io::Result<()> {
    out.write_all(&head.chunked_head())?;
    out.flush()?;
    while let Some(chunk) = source() {
        if chunk.is_empty() {
            continue;
        }
        out.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        out.write_all(&chunk)?;
        out.write_all(b"\r\n")?;
        out.flush()?;
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// A response as seen by the client.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ClientResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One blocking request over a fresh connection; `timeout` bounds connect, write and each read.
/// Redirects are not followed.
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<ClientResponse> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad("address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_BYTES as u64 * 4).read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// An open response whose body is read as it arrives (chunked or not), for endless streams.
pub struct BodyStream {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Bytes left in the current chunk; `None` before the first chunk header.
    left: Option<usize>,
    done: bool,
}

impl BodyStream {
    fn next_chunk_len(&mut self) -> io::Result<usize> {
        if self.left.is_some() {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
        let mut line = String::new();
        self.reader.by_ref().take(1024).read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))
    }
}

impl Read for BodyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if !self.chunked {
            return self.reader.read(buf);
        }
        if self.left.is_none_or(|n| n == 0) {
            let len = self.next_chunk_len()?;
            self.left = Some(len);
            if len == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let left = self.left.unwrap_or(0);
        let want = buf.len().min(left);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk cut short",
            ));
        }
        self.left = Some(left - n);
        Ok(n)
    }
}

/// `GET target` over a fresh connection; returns the head (status and headers, empty body) and
/// the body as a reader, de-chunked. `timeout` bounds connect and each read.
pub fn open_stream(
    addr: &str,
    target: &str,
    timeout: Duration,
) -> io::Result<(ClientResponse, BodyStream)> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad("address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take(MAX_BYTES as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no response head",
            ));
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let head = parse_response(&raw)?;
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = BodyStream {
        reader,
        chunked,
        left: None,
        done: false,
    };
    Ok((head, body))
}

/// Parses a full response (head and whatever body follows).
pub fn parse_response(raw: &[u8]) -> io::Result<ClientResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> io::Result<Request> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn parses_request_with_query_headers_and_body() {
        let r = parse(
            "PUT /v1/vpn/status?api_key=a%20b&x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\nContent-Length: 20\r\n\r\n{\"status\":\"stopped\"}",
        )
        .unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v1/vpn/status");
        assert_eq!(r.query("api_key"), Some("a b"));
        assert_eq!(r.query("x"), Some(""));
        assert_eq!(r.header("x-api-key"), Some("k"));
        assert_eq!(r.header("X-Api-Key"), Some("k"));
        assert_eq!(r.body_text(), "{\"status\":\"stopped\"}");
    }

    #[test]
    fn request_without_body_and_bare_lf() {
        let r = parse("GET / HTTP/1.0\nHost: x\n\n").unwrap();
        assert_eq!(r.path, "/");
        assert!(r.body.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("hello\r\n\r\n").is_err());
        assert!(parse("GET / SPDY/3\r\n\r\n").is_err());
        assert!(parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse("GET / HTTP/1.1\r\nnocolon\r\n\r\n").is_err());
        assert!(parse("GET / HTTP/1.1\r\n").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }

    #[test]
    fn response_round_trip() {
        let resp = Response::json(200, "{\"a\":1}").with_header("Location", "/x");
        let bytes = resp.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 7\r\nConnection: close\r\n\r\n"));
        let back = parse_response(&bytes).unwrap();
        assert_eq!(back.status, 200);
        assert_eq!(back.header("location"), Some("/x"));
        assert_eq!(back.body, "{\"a\":1}");
    }

    #[test]
    fn server_and_client_talk() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            serve(listener, |r: &Request| {
                Reply::Send(Response::text(
                    200,
                    &format!("{} {}", r.method, r.body_text()),
                ))
            })
        });
        let t = Duration::from_secs(2);
        let resp = request(&addr, "POST", "/x", &[("X-A", "1")], "hi", t).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, "POST hi\n");
    }

    #[test]
    fn chunked_stream_round_trip() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            serve(listener, |_: &Request| {
                let mut left = 3u8;
                let source: ChunkSource = Box::new(move || {
                    left = left.checked_sub(1)?;
                    Some(vec![b'a' + left; 1000 + usize::from(left)])
                });
                Reply::Stream(Response::new(200, "video/mp2t", ""), source)
            })
        });
        let (head, mut body) = open_stream(&addr, "/s", Duration::from_secs(2)).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        assert_eq!(head.header("content-length"), None);
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1002 + 1001 + 1000);
        assert!(all[..1002].iter().all(|&b| b == b'c'));
        assert!(all[2003..].iter().all(|&b| b == b'a'));
    }
}
