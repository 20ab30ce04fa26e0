//! A fake EC2 instance metadata service (IMDSv2) on 127.0.0.1.
//!
//! It speaks enough HTTP/1.1 for reqwest and curl (keep-alive, Content-Length)
//! and enforces IMDSv2's rules: `PUT /latest/api/token` needs the TTL header
//! (400 without it) and every metadata `GET` needs a token it issued (401
//! otherwise). Knobs reproduce what a real boot meets: an IMDS that starts
//! listening late, a burst of 500s, slow answers (time-outs), expired tokens,
//! and spot/rebalance/maintenance events injected mid-test. It runs on its own
//! thread and runtime, so sync tests and tests that launch the binary can use
//! it as well as async ones.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Where tokens are issued.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Prefix of metadata paths.
pub const META_DATA_PATH: &str = "/latest/meta-data/";
/// Header asking for a token lifetime.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsRequest {
    /// `GET`, `PUT`, …
    pub method: String,
    /// Request path.
    pub path: String,
    /// Whether a session token header was sent.
    pub had_token: bool,
    /// Status answered (0 when the client went away before the answer).
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    metadata: BTreeMap<String, String>,
    tokens: HashSet<String>,
    issued: u64,
    fail_next: u32,
    delay: Duration,
    log: Vec<ImdsRequest>,
}

/// A running fake IMDS; stops when dropped.
#[derive(Debug)]
pub struct FakeImds {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Metadata of a plain on-demand `p5.48xlarge` in `us-west-2a`.
fn default_metadata() -> BTreeMap<String, String> {
    [
        ("instance-id", "i-0123456789abcdef0"),
        ("instance-type", "p5.48xlarge"),
        ("local-ipv4", "10.1.0.1"),
        ("local-hostname", "ip-10-1-0-1.us-west-2.compute.internal"),
        ("placement/region", "us-west-2"),
        ("placement/availability-zone", "us-west-2a"),
        ("instance-life-cycle", "on-demand"),
        ("mac", "0e:12:34:56:78:9a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl FakeImds {
    /// Starts listening now on a free port.
    pub fn start() -> FakeImds {
        Self::start_late(Duration::ZERO)
    }

    /// Reserves a free port now but accepts connections only after `delay`:
    /// until then connections are refused, like an IMDS still coming up.
    pub fn start_late(delay: Duration) -> FakeImds {
        let socket = TcpSocket::new_v4().expect("create IMDS socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            metadata: default_metadata(),
            ..State::default()
        }));
        let (tx, rx) = oneshot::channel();
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("IMDS runtime");
            rt.block_on(serve(socket, delay, st, rx));
        });
        FakeImds {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a metadata value (path under `/latest/meta-data/`).
    pub fn set(&self, path: &str, value: &str) -> &Self {
        self.state()
            .metadata
            .insert(path.trim_matches('/').to_string(), value.to_string());
        self
    }

    /// Removes a metadata value: it answers 404 from now on.
    pub fn remove(&self, path: &str) -> &Self {
        self.state().metadata.remove(path.trim_matches('/'));
        self
    }

    /// Makes this a spot instance (`instance-life-cycle` = `spot`).
    pub fn spot(&self) -> &Self {
        self.set("instance-life-cycle", "spot")
    }

    /// Injects a spot interruption notice (`spot/instance-action`).
    pub fn set_spot_interruption(&self, action: &str, time: &str) -> &Self {
        let body = format!(r#"{{"action":"{action}","time":"{time}"}}"#);
        self.set("spot/instance-action", &body)
    }

    /// Injects a rebalance recommendation (`events/recommendations/rebalance`).
    pub fn set_rebalance_recommendation(&self, notice_time: &str) -> &Self {
        let body = format!(r#"{{"noticeTime":"{notice_time}"}}"#);
        self.set("events/recommendations/rebalance", &body)
    }

    /// Injects scheduled maintenance events (`events/maintenance/scheduled`),
    /// given as the JSON array IMDS serves.
    pub fn set_scheduled_maintenance(&self, events_json: &str) -> &Self {
        self.set("events/maintenance/scheduled", events_json)
    }

    /// The next `n` requests (any path) answer 500.
    pub fn fail_next(&self, n: u32) -> &Self {
        self.state().fail_next = n;
        self
    }

    /// Every answer waits `delay` first (to force client time-outs).
    pub fn set_delay(&self, delay: Duration) -> &Self {
        self.state().delay = delay;
        self
    }

    /// Forgets every issued token: the next metadata `GET` answers 401.
    pub fn expire_tokens(&self) -> &Self {
        self.state().tokens.clear();
        self
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<ImdsRequest> {
        self.state().log.clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.state().log.len()
    }

    /// Number of tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.state().issued
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    socket: TcpSocket,
    delay: Duration,
    state: Arc<Mutex<State>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = &mut shutdown => return,
    }
    let Ok(listener) = socket.listen(128) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(stream, Arc::clone(&state)));
                }
            }
            _ = &mut shutdown => return,
        }
    }
}

/// A parsed request: method, path and the headers the fake cares about.
struct Request {
    method: String,
    path: String,
    ttl: Option<String>,
    token: Option<String>,
    close: bool,
}

/// Serves requests on one connection until the client closes it.
async fn connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some((request, consumed)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..consumed);
        let delay = lock(&state).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, body) = answer(&request, &state);
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Internal Server Error",
        };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: EC2ws\r\n",
            body.len()
        );
        if request.close {
            head.push_str("Connection: close\r\n");
        }
        if status == 200 && request.path == TOKEN_PATH {
            head.push_str(&format!(
                "X-aws-ec2-metadata-token-ttl-seconds: {}\r\n",
                request.ttl.as_deref().unwrap_or("0")
            ));
        }
        head.push_str("\r\n");
        let written = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.flush().await
        }
        .await;
        let mut st = lock(&state);
        st.log.push(ImdsRequest {
            method: request.method,
            path: request.path,
            had_token: request.token.is_some(),
            status: if written.is_ok() { status } else { 0 },
        });
        drop(st);
        if written.is_err() || request.close {
            return;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one request (head and body) from the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Request, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let body_len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let request = Request {
                    method: parsed.method.unwrap_or("").to_string(),
                    path: parsed.path.unwrap_or("").to_string(),
                    ttl: header(TTL_HEADER),
                    token: header(TOKEN_HEADER),
                    close: header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"))
                        || parsed.version == Some(0),
                };
                while buf.len() < head_len + body_len {
                    if read_more(stream, buf).await == 0 {
                        return None;
                    }
                }
                return Some((request, head_len + body_len));
            }
            Ok(httparse::Status::Partial) => {
                if read_more(stream, buf).await == 0 {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// IMDSv2's rules, applied to one request.
fn answer(request: &Request, state: &Mutex<State>) -> (u16, String) {
    let mut st = lock(state);
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return (500, "Internal Server Error".into());
    }
    if request.path == TOKEN_PATH {
        if request.method != "PUT" {
            return (405, String::new());
        }
        let ttl_ok = request
            .ttl
            .as_deref()
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|t| (1..=21_600).contains(&t));
        if !ttl_ok {
            return (400, "missing or invalid token TTL header".into());
        }
        st.issued += 1;
        let token = format!("AQAEAFakeImdsToken{:08}==", st.issued);
        st.tokens.insert(token.clone());
        return (200, token);
    }
    let Some(meta_path) = request.path.strip_prefix(META_DATA_PATH) else {
        return (404, String::new());
    };
    if request.method != "GET" {
        return (405, String::new());
    }
    if !request
        .token
        .as_ref()
        .is_some_and(|t| st.tokens.contains(t))
    {
        return (401, String::new());
    }
    match st.metadata.get(meta_path.trim_matches('/')) {
        Some(v) => (200, v.clone()),
        None => (404, String::new()),
    }
}
