//! Load benchmark for `dockless serve`: sends signed merged-PR deliveries
//! (each with its own X-GitHub-Delivery) and prints acknowledgement latency
//! percentiles, then how long each acknowledged build waited to start.
//!
//! ```sh
//! DOCKLESS_WEBHOOK_SECRET=... cargo run --release --example webhook_load -- \
//!     127.0.0.1:8088[,127.0.0.1:8089,...] [--requests 500] [--concurrency 50] \
//!     [--repo owner/repo] [--distinct-commits] [--start-of N]
//! ```
//! Several addresses are used round robin, as a load balancer would.
//! `--distinct-commits` gives each delivery its own merge commit, so each
//! queues its own build (otherwise they all join one build). `--start-of N`
//! then measures acknowledgement → build start for N more deliveries sent
//! one at a time, each once the previous build has started (idle workers:
//! the wake-up path, e.g. PostgreSQL's NOTIFY to another replica).
//! The server must list the repository (default acme/shop) in `[[repos]]`.
//!
//! The burst is sent from one thread (an async client): signed bodies are
//! made before the clock starts, and a delivery's time runs from its
//! connect to the last byte of its answer. With a thread per connection
//! (as before), 50 client threads competed for the 2 cores with the server
//! they measured, and a reply's time included waiting for its thread to
//! be scheduled.

use std::cell::{Cell, RefCell};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FIXTURE: &str = include_str!("../testdata/webhooks/pull_request.closed.merged.json");

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
fn request(addr: &str, head: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(status_and_body(&raw))
}

/// [`request`] on the async client: `raw` is the whole request, sent in
/// one write.
async fn request_async(addr: &str, raw: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(raw).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(status_and_body(&answer))
}

/// The status code and body of a raw HTTP/1.1 answer.
fn status_and_body(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The build id in a 202's body.
fn build_id(reply: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v["build_id"].as_i64())
}

/// Deliveries signed with one secret, for one repository.
struct Sender {
    secret: Vec<u8>,
    payload: serde_json::Value,
    distinct_commits: bool,
    run: u32,
}

impl Sender {
    /// Delivery `n` to `addr` as one signed HTTP request: head and body.
    fn delivery(&self, addr: &str, n: usize) -> (String, Vec<u8>) {
        let mut payload = self.payload.clone();
        if self.distinct_commits {
            payload["pull_request"]["merge_commit_sha"] =
                format!("{:08x}{:032x}", self.run, n).into();
        }
        let body = serde_json::to_vec(&payload).unwrap();
        let sig = dockless::serve::webhook::sign(&self.secret, &body);
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: load-{}-{n}\r\nX-Hub-Signature-256: {sig}\r\n\r\n",
            body.len(),
            self.run
        );
        (head, body)
    }

    /// Delivery `n` to `addr`: the status and the build id of a 202.
    fn send(&self, addr: &str, n: usize) -> std::io::Result<(u16, Option<i64>)> {
        let (head, body) = self.delivery(addr, n);
        let (status, reply) = request(addr, &head, &body)?;
        Ok((status, build_id(&reply)))
    }
}

/// When build `id` started, as `GET /builds/<id>` says; waits for it.
fn started_at(addr: &str, id: i64, limit: Duration) -> Option<SystemTime> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let head =
            format!("GET /builds/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if let Ok((200, body)) = request(addr, &head, b"") {
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            if let Some(t) = v["started_at"].as_str() {
                return humantime::parse_rfc3339(t).ok();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut l: Vec<Duration>) {
    if l.is_empty() {
        println!("{what}: no samples");
        return;
    }
    l.sort();
    println!(
        "{what}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        percentile(&l, 0.50).as_secs_f64() * 1e3,
        percentile(&l, 0.90).as_secs_f64() * 1e3,
        percentile(&l, 0.99).as_secs_f64() * 1e3,
        l.last().unwrap().as_secs_f64() * 1e3,
        l.len()
    );
}

/// Wall-clock time from `ack` to `start`; zero when the clocks put the
/// start first (the database's clock and this one are the same machine's
/// in the README's runs).
fn gap(ack: SystemTime, start: SystemTime) -> Duration {
    start.duration_since(ack).unwrap_or_default()
}

/// What a burst of deliveries got back.
struct Burst {
    wall: Duration,
    latencies: Vec<Duration>,
    codes: std::collections::BTreeMap<u16, usize>,
    /// (address, build id, when its 202 arrived) of each accepted delivery.
    acked: Vec<(String, i64, SystemTime)>,
}

/// Sends `requests` deliveries, `concurrency` at a time, from one thread.
fn burst(addrs: &[String], sender: &Sender, requests: usize, concurrency: usize) -> Burst {
    let raw: Rc<Vec<(String, Vec<u8>)>> = (0..requests)
        .map(|n| {
            let addr = addrs[n % addrs.len()].clone();
            let (head, body) = sender.delivery(&addr, n);
            let mut raw = head.into_bytes();
            raw.extend_from_slice(&body);
            (addr, raw)
        })
        .collect::<Vec<_>>()
        .into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let next = Rc::new(Cell::new(0));
    let out = Rc::new(RefCell::new(Burst {
        wall: Duration::ZERO,
        latencies: Vec::with_capacity(requests),
        codes: Default::default(),
        acked: Vec::new(),
    }));
    let started = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..concurrency {
        let (next, out, raw) = (next.clone(), out.clone(), raw.clone());
        local.spawn_local(async move {
            loop {
                let n = next.get();
                if n >= requests {
                    break;
                }
                next.set(n + 1);
                let (addr, request) = (&raw[n].0, &raw[n].1);
                let t = Instant::now();
                let (code, reply) = request_async(addr, request).await.unwrap_or_default();
                let mut out = out.borrow_mut();
                out.latencies.push(t.elapsed());
                *out.codes.entry(code).or_default() += 1;
                if let Some(id) = build_id(&reply).filter(|_| code == 202) {
                    out.acked.push((addr.clone(), id, SystemTime::now()));
                }
            }
        });
    }
    rt.block_on(local);
    let mut out = Rc::try_unwrap(out)
        .ok()
        .expect("the tasks are done")
        .into_inner();
    out.wall = started.elapsed();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addrs) = args.first().filter(|a| !a.starts_with("--")).cloned() else {
        eprintln!(
            "usage: webhook_load HOST:PORT[,HOST:PORT...] [--requests N] [--concurrency N] [--repo owner/repo] [--distinct-commits] [--start-of N]"
        );
        std::process::exit(2);
    };
    let addrs: Vec<String> = addrs.split(',').map(str::to_string).collect();
    let requests: usize = arg(&args, "--requests", "500").parse().expect("--requests");
    let concurrency: usize = arg(&args, "--concurrency", "50")
        .parse()
        .expect("--concurrency");
    let start_of: usize = arg(&args, "--start-of", "0").parse().expect("--start-of");
    let repo = arg(&args, "--repo", "acme/shop");
    let secret = std::env::var("DOCKLESS_WEBHOOK_SECRET").expect("set DOCKLESS_WEBHOOK_SECRET");

    let mut payload: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    payload["repository"]["full_name"] = repo.into();
    let sender = Sender {
        secret: secret.into_bytes(),
        payload,
        distinct_commits: args.iter().any(|a| a == "--distinct-commits"),
        run: std::process::id(),
    };

    let sent = burst(&addrs, &sender, requests, concurrency);
    let wall = sent.wall;
    println!(
        "{requests} deliveries to {} replica(s), concurrency {concurrency}, {:.2}s ({:.0} req/s)",
        addrs.len(),
        wall.as_secs_f64(),
        requests as f64 / wall.as_secs_f64()
    );
    println!("status codes: {:?}", sent.codes);
    report("ack latency", sent.latencies);

    if sender.distinct_commits {
        // How long the burst's builds queued: ack → start, as the workers drain it.
        let waits = sent
            .acked
            .iter()
            .filter_map(|(addr, id, ack)| {
                started_at(addr, *id, Duration::from_secs(600)).map(|s| gap(*ack, s))
            })
            .collect();
        report("burst ack -> build start (queueing)", waits);
    }
    if start_of > 0 {
        let mut waits = Vec::new();
        for k in 0..start_of {
            let n = requests + k;
            let addr = &addrs[n % addrs.len()];
            if let Ok((202, Some(id))) = sender.send(addr, n) {
                let ack = SystemTime::now();
                // Read from another replica when there is one.
                let reader = &addrs[(n + 1) % addrs.len()];
                if let Some(s) = started_at(reader, id, Duration::from_secs(60)) {
                    waits.push(gap(ack, s));
                }
            }
            // Let the build fail and its worker go idle again.
            std::thread::sleep(Duration::from_millis(300));
        }
        report("idle ack -> build start (wake-up)", waits);
    }
}
