//! A fault-injecting HTTP/1.1 proxy for S3 tests.
//!
//! Listens on `127.0.0.1:0`; every client connection carries exactly one request: the
//! proxy reads it, draws a [`Fault`] from a seeded generator (so a run is repeatable up
//! to the order in which concurrent requests arrive), and either answers with an error,
//! breaks the connection, stalls, or forwards the request on a fresh upstream connection
//! and relays the response. Both the forwarded request and the relayed response say
//! `Connection: close`, so the client never reuses a connection and the proxy never
//! has to parse a second request.
//!
//! Invariants:
//! - every socket has read and write timeouts and every stall is bounded by
//!   [`FaultPlan::stall`], so no proxy thread lives longer than a few seconds past its
//!   request;
//! - dropping the [`FaultProxy`] stops the accept loop (stop flag, then a connection to
//!   itself to wake `accept`) and joins it;
//! - [`FaultProxy::counts`] reports each injected fault by kind, so a test can assert
//!   that it injected what it meant to.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Socket timeouts: far above anything a healthy request needs on loopback.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Answer `503 Slow Down` with an S3 error body, without forwarding.
    SlowDown,
    /// Answer `500 Internal Server Error` with an S3 error body, without forwarding.
    InternalError,
    /// Read only the request head, then close: the unread body makes the kernel send
    /// a reset, and the client sees its upload aborted.
    ResetEarly,
    /// Read the whole request, then close without a reply (not forwarded).
    ResetAfterRequest,
    /// Forward the request (the server applies it), relay the response head and only
    /// the first half of its body (half the head if the body is empty), then close.
    DropResponse,
    /// Read the request, wait [`FaultPlan::stall`], close (not forwarded).
    Stall,
    /// Forward the request (the server applies it), wait [`FaultPlan::stall`], then
    /// relay the response (to a client that has usually given up).
    SlowReply,
}

impl Fault {
    /// Every kind, in a fixed order.
    pub const ALL: [Fault; 7] = [
        Fault::SlowDown,
        Fault::InternalError,
        Fault::ResetEarly,
        Fault::ResetAfterRequest,
        Fault::DropResponse,
        Fault::Stall,
        Fault::SlowReply,
    ];
}

/// The request line and headers of one request, for [`FaultPlan::scope`].
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request changes the store (everything but `GET` and `HEAD`).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }

    /// Whether this is a listing (`GET /bucket?list-type=2...`).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.target.contains("list-type=")
    }

    /// Whether this is a conditional create (`If-None-Match: *`).
    pub fn is_create(&self) -> bool {
        self.header("if-none-match") == Some("*")
    }
}

/// Which requests may be faulted and how often.
#[derive(Clone)]
pub struct FaultPlan {
    /// Seed of the generator that draws faults.
    pub seed: u64,
    /// Probability of each kind per eligible request; their sum must be at most 1.
    pub rates: Vec<(Fault, f64)>,
    /// Eligible requests forwarded untouched before faults may start.
    pub healthy_requests: u64,
    /// Which requests are eligible for faults (all others are forwarded).
    pub scope: fn(&RequestHead) -> bool,
    /// Veto of a drawn fault for an eligible request (then it is forwarded): keeps
    /// known failure modes, tested on their own, out of broader tests.
    pub allow: fn(&RequestHead, Fault) -> bool,
    /// Length of [`Fault::Stall`] and [`Fault::SlowReply`].
    pub stall: Duration,
    /// Stop injecting after this many faults (`None`: no limit).
    pub max_faults: Option<u64>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("seed", &self.seed)
            .field("rates", &self.rates)
            .field("healthy_requests", &self.healthy_requests)
            .field("stall", &self.stall)
            .finish()
    }
}

impl FaultPlan {
    /// Forward everything.
    pub fn healthy() -> Self {
        FaultPlan {
            seed: 1,
            rates: Vec::new(),
            healthy_requests: 0,
            scope: |_| true,
            allow: |_, _| true,
            stall: Duration::from_secs(3),
            max_faults: None,
        }
    }

    /// Each request gets `fault` with the given probability.
    pub fn with(mut self, fault: Fault, rate: f64) -> Self {
        self.rates.push((fault, rate));
        self
    }

    /// Set the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Restrict faults to requests for which `scope` holds.
    pub fn scope(mut self, scope: fn(&RequestHead) -> bool) -> Self {
        self.scope = scope;
        self
    }

    /// Veto drawn faults for which `allow` is false.
    pub fn allow(mut self, allow: fn(&RequestHead, Fault) -> bool) -> Self {
        self.allow = allow;
        self
    }

    /// Inject at most `n` faults.
    pub fn at_most(mut self, n: u64) -> Self {
        self.max_faults = Some(n);
        self
    }

    /// Let the first `n` eligible requests (see [`FaultPlan::scope`]) through untouched.
    pub fn after(mut self, n: u64) -> Self {
        self.healthy_requests = n;
        self
    }

    /// Set the stall length.
    pub fn stall(mut self, d: Duration) -> Self {
        self.stall = d;
        self
    }
}

/// What the proxy has seen and done.
#[derive(Debug, Clone, Default)]
pub struct ProxyCounts {
    /// Requests read from clients.
    pub requests: u64,
    /// Requests eligible for faults under the current plan.
    pub eligible: u64,
    /// Faults drawn but vetoed by [`FaultPlan::allow`].
    pub vetoed: u64,
    /// Requests forwarded and answered without a fault.
    pub forwarded: u64,
    /// Injected faults by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Requests by method.
    pub methods: BTreeMap<String, u64>,
    /// Each injected fault with the method and path (query cut) of its request.
    pub log: Vec<(Fault, String)>,
    /// Every request in arrival order: method, path and what happened (the fault, or
    /// the upstream status), for diagnosis.
    pub trace: Vec<String>,
    /// Requests with a chunked body.
    pub chunked_requests: u64,
    /// Proxy-side failures (upstream unreachable, malformed messages), for diagnosis.
    pub errors: Vec<String>,
}

impl ProxyCounts {
    /// Faults injected into multipart-upload requests (create, part, complete).
    pub fn multipart_faults(&self) -> u64 {
        self.log
            .iter()
            .filter(|(_, r)| r.contains("uploadId=") || r.contains("?uploads"))
            .count() as u64
    }

    /// Faults of `kind` injected.
    pub fn of(&self, kind: Fault) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    /// All faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

struct State {
    plan: FaultPlan,
    rng: u64,
    counts: ProxyCounts,
    /// Eligible requests and faults since the plan was set.
    plan_eligible: u64,
    plan_faults: u64,
}

struct Shared {
    upstream: String,
    stop: AtomicBool,
    state: Mutex<State>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Start a proxy in front of `upstream` (`host:port`).
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                rng: plan.seed,
                plan,
                counts: ProxyCounts::default(),
                plan_eligible: 0,
                plan_faults: 0,
            }),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn the proxy accept thread");
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>`, for `S3Options::endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace the plan. The generator restarts from the new seed, and
    /// `healthy_requests` and `max_faults` count from now; the counters keep counting.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.shared.state.lock().unwrap();
        state.rng = plan.seed;
        state.plan = plan;
        state.plan_eligible = 0;
        state.plan_faults = 0;
    }

    /// A copy of the counters.
    pub fn counts(&self) -> ProxyCounts {
        self.shared.state.lock().unwrap().counts.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        // Detached: every handler is bounded by socket timeouts and the stall length.
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                if let Err(e) = handle(conn, &shared) {
                    shared.state.lock().unwrap().counts.errors.push(e);
                }
            });
    }
}

/// splitmix64: small, seedable, good enough to draw faults.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn decide(shared: &Shared, head: &RequestHead, chunked: bool) -> (Option<Fault>, Duration) {
    let mut state = shared.state.lock().unwrap();
    let State {
        plan,
        rng,
        counts,
        plan_eligible,
        plan_faults,
    } = &mut *state;
    counts.requests += 1;
    *counts.methods.entry(head.method.clone()).or_default() += 1;
    if chunked {
        counts.chunked_requests += 1;
    }
    let stall = plan.stall;
    if !(plan.scope)(head) {
        return (None, stall);
    }
    counts.eligible += 1;
    *plan_eligible += 1;
    if *plan_eligible <= plan.healthy_requests || plan.max_faults.is_some_and(|m| *plan_faults >= m)
    {
        return (None, stall);
    }
    let draw = (next_random(rng) >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for &(fault, rate) in &plan.rates {
        acc += rate;
        if draw < acc {
            if !(plan.allow)(head, fault) {
                counts.vetoed += 1;
                return (None, stall);
            }
            *counts.faults.entry(fault).or_default() += 1;
            counts
                .log
                .push((fault, format!("{} {}", head.method, head.target)));
            *plan_faults += 1;
            return (Some(fault), stall);
        }
    }
    (None, stall)
}

fn handle(mut client: TcpStream, shared: &Shared) -> Result<(), String> {
    client.set_read_timeout(Some(IO_TIMEOUT)).ok();
    client.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let (head_bytes, mut rest) = match read_head(&mut client) {
        Ok(Some(h)) => h,
        // The wake-up connection of Drop, or a client that gave up: nothing to do.
        Ok(None) => return Ok(()),
        Err(e) => return Err(format!("reading a request head: {e}")),
    };
    let head = parse_request_head(&head_bytes)?;
    let framing = body_framing(&head.headers, false, &head.method, 0);
    let chunked = matches!(framing, Framing::Chunked);
    let (fault, stall) = decide(shared, &head, chunked);
    if let Some(f) = fault.filter(|f| !matches!(f, Fault::DropResponse | Fault::SlowReply)) {
        shared
            .state
            .lock()
            .unwrap()
            .counts
            .trace
            .push(format!("{} {} -> {f:?}", head.method, head.target));
    }
    if fault == Some(Fault::ResetEarly) {
        // Closing with unread body bytes in the receive buffer sends a reset; for a
        // request without a body this is a plain close before any reply.
        drop(client);
        return Ok(());
    }
    read_body(&mut client, &mut rest, &framing)
        .map_err(|e| format!("{} {}: reading the body: {e}", head.method, head.target))?;
    match fault {
        Some(Fault::SlowDown) => {
            let _ = client.write_all(&error_response(503, "Slow Down", "SlowDown"));
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::InternalError) => {
            let _ = client.write_all(&error_response(
                500,
                "Internal Server Error",
                "InternalError",
            ));
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::ResetAfterRequest) => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Stall) => {
            std::thread::sleep(stall);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let request = rewrite_head(&head_bytes);
    let response = forward(&shared.upstream, &request, &rest, &head.method)
        .map_err(|e| format!("{} {}: forwarding: {e}", head.method, head.target))?;
    let status = String::from_utf8_lossy(&response[..response.len().min(12)]).to_string();
    shared.state.lock().unwrap().counts.trace.push(format!(
        "{} {} -> {}{}",
        head.method,
        head.target,
        status.trim_start_matches("HTTP/1.1 "),
        fault.map(|f| format!(" then {f:?}")).unwrap_or_default()
    ));
    match fault {
        Some(Fault::DropResponse) => {
            let head_len = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
            let cut = if response.len() > head_len {
                head_len + (response.len() - head_len) / 2
            } else {
                head_len / 2
            };
            let _ = client.write_all(&response[..cut]);
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::SlowReply) => {
            std::thread::sleep(stall);
            let _ = client.write_all(&response);
            let _ = client.shutdown(Shutdown::Both);
        }
        _ => {
            shared.state.lock().unwrap().counts.forwarded += 1;
            let _ = client.write_all(&response);
            let _ = client.shutdown(Shutdown::Write);
        }
    }
    Ok(())
}

/// Send one request upstream and read the whole response, its head rewritten to
/// `Connection: close`.
fn forward(upstream: &str, head: &[u8], body: &[u8], method: &str) -> Result<Vec<u8>, String> {
    let addr: SocketAddr = upstream
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            upstream
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| "no address".to_string())
        })
        .map_err(|e| format!("upstream {upstream}: {e}"))?;
    let mut up = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {upstream}: {e}"))?;
    up.set_read_timeout(Some(IO_TIMEOUT)).ok();
    up.set_write_timeout(Some(IO_TIMEOUT)).ok();
    up.write_all(head).map_err(|e| e.to_string())?;
    up.write_all(body).map_err(|e| e.to_string())?;
    let (resp_head, mut rest) = read_head(&mut up)
        .map_err(|e| format!("reading the response head: {e}"))?
        .ok_or("upstream closed without a response")?;
    let (status, headers) = parse_response_head(&resp_head)?;
    let framing = body_framing(&headers, true, method, status);
    read_body(&mut up, &mut rest, &framing).map_err(|e| format!("response body: {e}"))?;
    let mut out = rewrite_head(&resp_head);
    out.extend_from_slice(&rest);
    Ok(out)
}

/// Read until the end of a message head; returns the head (with its blank line) and
/// whatever was read past it. `None` if the peer closed before sending anything.
fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("message head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers(lines: &mut std::str::Split<'_, &str>) -> Vec<(String, String)> {
    lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn parse_request_head(head: &[u8]) -> Result<RequestHead, String> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("bad request line {line:?}"));
    };
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        headers: parse_headers(&mut lines),
    })
}

fn parse_response_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    Ok((status, parse_headers(&mut lines)))
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn body_framing(
    headers: &[(String, String)],
    response: bool,
    method: &str,
    status: u16,
) -> Framing {
    if response && (method == "HEAD" || status == 204 || status == 304 || status < 200) {
        return Framing::Length(0);
    }
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match get("content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        None if response => Framing::UntilClose,
        None => Framing::Length(0),
    }
}

/// Complete `buf` (bytes already read past the head) to the whole body, kept in its
/// wire form (chunked bodies stay chunked).
fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, framing: &Framing) -> std::io::Result<()> {
    let mut chunk = [0u8; 64 << 10];
    let mut fill = |s: &mut TcpStream, buf: &mut Vec<u8>| -> std::io::Result<bool> {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    match framing {
        Framing::Length(n) => {
            while buf.len() < *n {
                if !fill(s, buf)? {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.truncate(*n);
        }
        Framing::UntilClose => while fill(s, buf)? {},
        Framing::Chunked => {
            let mut pos = 0;
            loop {
                // Chunk size line.
                let line_end = loop {
                    if let Some(i) = find(&buf[pos..], b"\r\n") {
                        break pos + i;
                    }
                    if !fill(s, buf)? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let line = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
                let size_hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
                pos = line_end + 2;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        if let Some(i) = find(&buf[pos..], b"\r\n") {
                            let empty = i == 0;
                            pos += i + 2;
                            if empty {
                                buf.truncate(pos);
                                return Ok(());
                            }
                            continue;
                        }
                        if !fill(s, buf)? {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
                while buf.len() < pos + size + 2 {
                    if !fill(s, buf)? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                pos += size + 2;
            }
        }
    }
    Ok(())
}

/// The head with `Connection: close` in place of any connection headers.
fn rewrite_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 32);
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 {
            let name = line.split(':').next().unwrap_or_default().trim();
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn error_response(status: u16, reason: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the fault proxy</Message><RequestId>fault</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
