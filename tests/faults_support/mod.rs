//! A fault-injecting HTTP proxy for tests, in front of a real registry.
//!
//! One request per connection (both sides get `Connection: close`), so each
//! request can be cut, stalled, answered by the proxy or have the registry's
//! real answer rewritten. Every fault applied is counted by kind. Either
//! side may speak TLS: a proxy in front of a TLS registry sees its traffic
//! in the clear, as a TLS-terminating front would.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::regsupport::Certs;

/// One side of a proxied request, in the clear or over TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    /// The socket under it (to reset it).
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl Conn for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

type Stream = Box<dyn Conn>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves the certificate (valid for 127.0.0.1) and key of `certs`.
fn acceptor(certs: &Certs) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certs.cert())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.key()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

fn connector(ca: &Path) -> TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub content_length: u64,
    /// Which listener took it (0 = main, 1 = alternate port).
    pub listener: usize,
}

impl Req {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// A blob upload with a body going into an upload session.
    pub fn is_upload_body(&self) -> bool {
        self.path().contains("/blobs/uploads/") && self.content_length > 0
    }
}

/// A response head (from the registry) that rules may rewrite.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.remove_header(name);
        self.headers.push((name.to_string(), value.to_string()));
    }
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

type Matcher = Box<dyn Fn(&Req) -> bool + Send + Sync>;
type Rewriter = Box<dyn Fn(&Req, &mut Resp) + Send + Sync>;

pub enum Action {
    /// Forward only the first N bytes of the request body, then reset both
    /// sides (a request without a body: its head only).
    ResetAfter(u64),
    /// Forward the whole request, then reset the client instead of answering
    /// (the registry acted; the answer is lost).
    DropAnswer,
    /// Forward the whole request, then send nothing for this long.
    StallAnswer(Duration),
    /// Forward without this request header (a registry that ignores it).
    DropHeader(&'static str),
    /// Forward, then pass on the answer's head and only the first N bytes
    /// of its body, then reset (a download cut short).
    CutAnswer(u64),
    /// Like `CutAnswer`, but send nothing more for this long before the
    /// reset (a download that stalls mid-body).
    StallAnswerBody(u64, Duration),
    /// Forward the first N bytes of the request body, then stop reading it
    /// for this long (the client's writes block), then reset both sides.
    StallBody(u64, Duration),
    /// Forward the first `.1` bytes of the request body at `.0` bytes per
    /// second, the rest at full speed (so no data waits in buffers at the end).
    Throttle(u64, u64),
    /// Answer with this status without forwarding.
    Status(u16),
    /// 429 with `Retry-After: N`.
    TooMany(u64),
    /// Forward, then rewrite the registry's answer.
    Rewrite(Rewriter),
    /// Run a side effect (e.g. kill the registry), then forward.
    Before(Box<dyn Fn() + Send + Sync>),
    /// Answer this instead of the registry (to emulate a token server or
    /// a registry's auth front): status, extra header lines, body.
    Reply(u16, String, String),
    /// Forward with this request header added (a storage front that
    /// authorizes requests itself, e.g. by a signature in the URL). What
    /// the proxy saw is recorded without it.
    AddHeader(&'static str, String),
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::ResetAfter(_) => "reset",
            Action::DropAnswer => "reset-before-answer",
            Action::StallAnswer(_) => "stall",
            Action::CutAnswer(_) => "cut-answer",
            Action::StallAnswerBody(..) => "stall-answer-body",
            Action::DropHeader(_) => "header-ignored",
            Action::StallBody(..) => "stall-body",
            Action::Throttle(..) => "throttle",
            Action::Status(500) => "http-500",
            Action::Status(502) => "http-502",
            Action::Status(503) => "http-503",
            Action::Status(_) => "http-other",
            Action::TooMany(_) => "http-429",
            Action::Rewrite(_) => "rewrite",
            Action::Before(_) => "side-effect",
            Action::Reply(..) => "emulated",
            Action::AddHeader(..) => "header-added",
        }
    }
}

pub struct Rule {
    matcher: Matcher,
    /// Matching requests to let through first.
    skip: usize,
    /// How many times to apply (usize::MAX = always).
    times: usize,
    action: Action,
}

impl Rule {
    pub fn new(matcher: impl Fn(&Req) -> bool + Send + Sync + 'static, action: Action) -> Rule {
        Rule {
            matcher: Box::new(matcher),
            skip: 0,
            times: 1,
            action,
        }
    }
    pub fn skip(mut self, n: usize) -> Rule {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = n;
        self
    }
    pub fn always(self) -> Rule {
        self.times(usize::MAX)
    }
}

/// What the proxy saw: each request, its final status (0 = none sent) and
/// the fault applied, if any.
#[derive(Debug, Clone)]
pub struct Seen {
    pub req: Req,
    pub status: u16,
    pub fault: Option<&'static str>,
}

#[derive(Default)]
struct State {
    upstream: String,
    /// Set when the upstream registry speaks TLS.
    upstream_tls: Option<TlsConnector>,
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    faults: BTreeMap<&'static str, usize>,
}

pub struct FaultProxy {
    /// `127.0.0.1:PORT` of the main listener.
    pub addr: String,
    /// A second listener with the same behaviour (another "host" for Location).
    pub alt_addr: String,
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Appended for the README's figures (summed by scripts/faults-tally.sh).
        let st = self.state.lock().unwrap();
        if let Ok(path) = std::env::var("DOCKLESS_FAULTS_TALLY") {
            let mut line = String::new();
            for (k, v) in &st.faults {
                line.push_str(&format!("{k}={v} "));
            }
            if !line.is_empty() {
                use std::io::Write as _;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{}", line.trim_end());
                }
            }
        }
    }
}

impl FaultProxy {
    /// Plain HTTP on both sides.
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, None, None).await
    }

    /// HTTPS on both sides: in front of a TLS registry whose certificate
    /// `certs` made, serving that certificate too.
    pub async fn start_tls(upstream: &str, certs: &Certs) -> FaultProxy {
        Self::start_with(
            upstream,
            Some(acceptor(certs)),
            Some(connector(&certs.ca())),
        )
        .await
    }

    /// Plain HTTP to clients, HTTPS to a TLS registry signed by `ca`.
    pub async fn start_plain_to_tls(upstream: &str, ca: &Path) -> FaultProxy {
        Self::start_with(upstream, None, Some(connector(ca))).await
    }

    async fn start_with(
        upstream: &str,
        tls: Option<TlsAcceptor>,
        upstream_tls: Option<TlsConnector>,
    ) -> FaultProxy {
        let state = Arc::new(Mutex::new(State {
            upstream: upstream.to_string(),
            upstream_tls,
            ..State::default()
        }));
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for listener_no in 0..2 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            let st = state.clone();
            let tls = tls.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((c, _)) = l.accept().await {
                    let (st, tls) = (st.clone(), tls.clone());
                    tokio::spawn(async move {
                        let client: Stream = match tls {
                            Some(a) => match a.accept(c).await {
                                Ok(t) => Box::new(t),
                                Err(_) => return,
                            },
                            None => Box::new(c),
                        };
                        handle(client, st, listener_no).await
                    });
                }
            }));
        }
        FaultProxy {
            addr: addrs[0].clone(),
            alt_addr: addrs[1].clone(),
            state,
            tasks,
        }
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Refuses every monolithic blob upload (a PUT with a body) with 405,
    /// so clients must upload in chunks.
    pub fn refuse_monolithic_uploads(&self) {
        self.add(
            Rule::new(
                |r| r.method == "PUT" && r.is_upload_body(),
                Action::Status(405),
            )
            .always(),
        );
    }

    pub fn clear_rules(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    /// Faults applied so far, by kind.
    pub fn faults(&self) -> BTreeMap<&'static str, usize> {
        self.state.lock().unwrap().faults.clone()
    }

    pub fn fault_count(&self) -> usize {
        self.faults().values().sum()
    }
}

async fn read_head(sock: &mut Stream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn parse_req(head: &str, listener: usize) -> Option<Req> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let mut headers = Vec::new();
    let mut content_length = 0;
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.parse().unwrap_or(0);
        }
        headers.push((k, v));
    }
    Some(Req {
        method,
        target,
        headers,
        content_length,
        listener,
    })
}

// Deprecated because a non-zero linger blocks on drop; zero does not.
#[allow(deprecated)]
fn reset(sock: Stream) {
    // SO_LINGER 0: close with RST, as a crashed peer or middlebox would.
    let _ = sock.tcp().set_linger(Some(Duration::ZERO));
    drop(sock);
}

/// A connection to the registry, over TLS when it speaks TLS.
async fn connect_upstream(upstream: &str, tls: Option<TlsConnector>) -> Option<Stream> {
    let tcp = TcpStream::connect(upstream).await.ok()?;
    let Some(connector) = tls else {
        return Some(Box::new(tcp));
    };
    let host = upstream.rsplit_once(':').map_or(upstream, |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let tls = connector.connect(name, tcp).await.ok()?;
    Some(Box::new(tls))
}

async fn respond(client: &mut Stream, status: u16, extra: &str) {
    let body = format!(
        r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected by test proxy ({status})"}}]}}"#
    );
    let resp = format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}

async fn drain(client: &mut Stream, mut n: u64) {
    let mut tmp = vec![0u8; 65536];
    while n > 0 {
        let want = tmp.len().min(n as usize);
        match client.read(&mut tmp[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n -= k as u64,
        }
    }
}

/// Decide what to do with `req`: the first live rule that matches.
fn pick(st: &mut State, req: &Req) -> Option<usize> {
    for (i, r) in st.rules.iter_mut().enumerate() {
        if r.times == 0 || !(r.matcher)(req) {
            continue;
        }
        if r.skip > 0 {
            r.skip -= 1;
            continue;
        }
        if r.times != usize::MAX {
            r.times -= 1;
        }
        return Some(i);
    }
    None
}

async fn handle(mut client: Stream, st: Arc<Mutex<State>>, listener: usize) {
    let Some((head, early)) = read_head(&mut client).await else {
        return;
    };
    let Some(req) = parse_req(&head, listener) else {
        return;
    };
    // Take the action out for the duration of this request (Rewrite and Before
    // closures stay in the rule list, so they are run under the lock below).
    let (upstream, upstream_tls, chosen) = {
        let mut s = st.lock().unwrap();
        let chosen = pick(&mut s, &req);
        if let Some(i) = chosen {
            let kind = s.rules[i].action.kind();
            *s.faults.entry(kind).or_default() += 1;
        }
        (s.upstream.clone(), s.upstream_tls.clone(), chosen)
    };
    let record = |status: u16, fault: Option<&'static str>| {
        st.lock().unwrap().seen.push(Seen {
            req: req.clone(),
            status,
            fault,
        });
    };
    let kind = chosen.map(|i| st.lock().unwrap().rules[i].action.kind());
    let body_rest = req.content_length.saturating_sub(early.len() as u64);

    // Faults answered by the proxy itself.
    enum Plan {
        Forward,
        ResetAfter(u64),
        DropAnswer,
        Stall(Duration),
        CutAnswer(u64, Duration),
        StallBody(u64, Duration),
        Throttle(u64, u64),
    }
    let mut plan = Plan::Forward;
    let mut plan_reply: Option<(u16, String, String)> = None;
    let mut dropped: Option<&'static str> = None;
    let mut added: Option<(&'static str, String)> = None;
    if let Some(i) = chosen {
        let simple = {
            let s = st.lock().unwrap();
            match &s.rules[i].action {
                Action::Status(code) => Some((*code, String::new())),
                Action::TooMany(secs) => Some((429, format!("Retry-After: {secs}\r\n"))),
                Action::ResetAfter(n) => {
                    plan = Plan::ResetAfter(*n);
                    None
                }
                Action::DropAnswer => {
                    plan = Plan::DropAnswer;
                    None
                }
                Action::StallAnswer(d) => {
                    plan = Plan::Stall(*d);
                    None
                }
                Action::CutAnswer(n) => {
                    plan = Plan::CutAnswer(*n, Duration::ZERO);
                    None
                }
                Action::StallAnswerBody(n, d) => {
                    plan = Plan::CutAnswer(*n, *d);
                    None
                }
                Action::DropHeader(name) => {
                    dropped = Some(*name);
                    None
                }
                Action::AddHeader(name, value) => {
                    added = Some((*name, value.clone()));
                    None
                }
                Action::StallBody(n, d) => {
                    plan = Plan::StallBody(*n, *d);
                    None
                }
                Action::Throttle(rate, bytes) => {
                    plan = Plan::Throttle(*rate, *bytes);
                    None
                }
                Action::Before(f) => {
                    f();
                    None
                }
                Action::Rewrite(_) => None,
                Action::Reply(code, extra, body) => {
                    plan_reply = Some((*code, extra.clone(), body.clone()));
                    None
                }
            }
        };
        if let Some((code, extra, body)) = plan_reply {
            drain(&mut client, body_rest).await;
            record(code, kind);
            let resp = format!(
                "HTTP/1.1 {code} Emulated\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        if let Some((code, extra)) = simple {
            drain(&mut client, body_rest).await;
            record(code, kind);
            respond(&mut client, code, &extra).await;
            return;
        }
    }

    let Some(mut up) = connect_upstream(&upstream, upstream_tls).await else {
        // Registry gone: the client sees its connection reset.
        record(0, kind.or(Some("upstream-down")));
        reset(client);
        return;
    };
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection")
            && dropped.is_none_or(|d| !k.eq_ignore_ascii_case(d))
        {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if let Some((k, v)) = &added {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).await.is_err() {
        reset(client);
        return;
    }
    // Body: forward up to the reset or stall point, if any.
    let limit = match plan {
        Plan::ResetAfter(n) | Plan::StallBody(n, _) => n,
        _ => u64::MAX,
    };
    // Bytes per read and the pause after each while throttled, and how far.
    let (piece, pause, slow_until) = match plan {
        Plan::Throttle(rate, bytes) => (
            (rate / 10).max(1) as usize,
            Duration::from_millis(100),
            bytes,
        ),
        _ => (65536, Duration::ZERO, 0),
    };
    let mut forwarded = 0u64;
    let first = &early[..early.len().min(limit as usize)];
    if up.write_all(first).await.is_err() {
        reset(client);
        return;
    }
    forwarded += first.len() as u64;
    let mut rest = body_rest;
    let mut tmp = vec![0u8; piece.max(65536)];
    while rest > 0 && forwarded < limit {
        let slow = forwarded < slow_until;
        let size = if slow { piece } else { tmp.len() };
        let want = (size as u64).min(rest).min(limit - forwarded) as usize;
        let n = match client.read(&mut tmp[..want]).await {
            Ok(0) | Err(_) => {
                reset(up);
                return;
            }
            Ok(n) => n,
        };
        if up.write_all(&tmp[..n]).await.is_err() {
            reset(client);
            return;
        }
        rest -= n as u64;
        forwarded += n as u64;
        if slow {
            tokio::time::sleep(pause).await;
        }
    }
    if let Plan::ResetAfter(_) | Plan::StallBody(..) = plan {
        // A request without a body is cut once its head went upstream.
        if forwarded < req.content_length || req.content_length == 0 {
            record(0, kind);
            if let Plan::StallBody(_, d) = plan {
                tokio::time::sleep(d).await;
            }
            reset(up);
            reset(client);
            return;
        }
    }
    // TLS buffers what it writes: all of the request goes out first.
    if up.flush().await.is_err() {
        reset(client);
        return;
    }
    // The registry's whole answer (it closes after one request).
    let mut raw = Vec::new();
    match up.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A TLS peer may close without close_notify once it has answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(_) => {
            reset(client);
            return;
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let (rhead, rbody) = raw.split_at(split);
    let rhead = String::from_utf8_lossy(rhead).into_owned();
    let mut lines = rhead.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(502);
    let reason = parts.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Resp {
        status,
        reason,
        headers,
    };
    match plan {
        Plan::DropAnswer => {
            record(resp.status, kind);
            reset(client);
            return;
        }
        Plan::Stall(d) => {
            record(resp.status, kind);
            tokio::time::sleep(d).await;
            reset(client);
            return;
        }
        Plan::CutAnswer(n, stall) => {
            record(resp.status, kind);
            let _ = client.write_all(rhead.as_bytes()).await;
            let _ = client
                .write_all(&rbody[..rbody.len().min(n as usize)])
                .await;
            let _ = client.flush().await;
            tokio::time::sleep(stall).await;
            reset(client);
            return;
        }
        _ => {}
    }
    if let Some(i) = chosen {
        let s = st.lock().unwrap();
        if let Action::Rewrite(f) = &s.rules[i].action {
            f(&req, &mut resp);
        }
    }
    record(resp.status, kind);
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (k, v) in &resp.headers {
        if !k.eq_ignore_ascii_case("connection") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let _ = client.write_all(out.as_bytes()).await;
    let _ = client.write_all(rbody).await;
    let _ = client.shutdown().await;
}

/// Upload session id of an upload URL path (`/v2/<repo>/blobs/uploads/<id>`).
pub fn session_id(path: &str) -> Option<&str> {
    let (_, id) = path.split_once("/blobs/uploads/")?;
    (!id.is_empty()).then_some(id)
}

fn is_session_answer(r: &Req) -> bool {
    r.path().contains("/blobs/uploads/") && matches!(r.method.as_str(), "POST" | "PATCH")
}

/// Rewrites every upload-session Location (the answers to POST and PATCH)
/// with `f(location_path_and_query)`.
pub fn rewrite_location(f: impl Fn(&str) -> String + Send + Sync + 'static) -> Rule {
    Rule::new(
        is_session_answer,
        Action::Rewrite(Box::new(move |_req: &Req, resp: &mut Resp| {
            if let Some(loc) = resp.header("location").map(str::to_string) {
                let u = url::Url::parse(&loc).unwrap();
                let pq = match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                };
                resp.set_header("Location", &f(&pq));
            }
        })),
    )
    .always()
}
