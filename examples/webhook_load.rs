//! Load benchmark for `dockless serve`: sends signed merged-PR deliveries
//! (each with its own X-GitHub-Delivery, so each queues a build) and prints
//! acknowledgement latency percentiles.
//!
//! ```sh
//! DOCKLESS_WEBHOOK_SECRET=... cargo run --release --example webhook_load -- \
//!     127.0.0.1:8088 [--requests 500] [--concurrency 50] [--repo owner/repo]
//! ```
//! The server must list the repository (default acme/shop) in `[[repos]]`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FIXTURE: &str = include_str!("../testdata/webhooks/pull_request.closed.merged.json");

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// One delivery; returns the status code.
fn send(addr: &str, body: &[u8], sig: &str, delivery: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {sig}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().filter(|a| !a.starts_with("--")).cloned() else {
        eprintln!(
            "usage: webhook_load HOST:PORT [--requests N] [--concurrency N] [--repo owner/repo]"
        );
        std::process::exit(2);
    };
    let requests: usize = arg(&args, "--requests", "500").parse().expect("--requests");
    let concurrency: usize = arg(&args, "--concurrency", "50")
        .parse()
        .expect("--concurrency");
    let repo = arg(&args, "--repo", "acme/shop");
    let secret = std::env::var("DOCKLESS_WEBHOOK_SECRET").expect("set DOCKLESS_WEBHOOK_SECRET");

    let mut payload: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    payload["repository"]["full_name"] = repo.into();
    let body = Arc::new(serde_json::to_vec(&payload).unwrap());
    let sig = Arc::new(dockless::serve::webhook::sign(secret.as_bytes(), &body));
    let run = std::process::id();

    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let codes = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, latencies, codes) = (next.clone(), latencies.clone(), codes.clone());
            let (addr, body, sig) = (addr.clone(), body.clone(), sig.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let t = Instant::now();
                let code = send(&addr, &body, &sig, &format!("load-{run}-{n}")).unwrap_or(0);
                latencies.lock().unwrap().push(t.elapsed());
                *codes.lock().unwrap().entry(code).or_default() += 1;
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let wall = started.elapsed();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    println!(
        "{requests} deliveries, concurrency {concurrency}, {:.2}s ({:.0} req/s)",
        wall.as_secs_f64(),
        requests as f64 / wall.as_secs_f64()
    );
    println!("status codes: {:?}", codes.lock().unwrap());
    println!(
        "ack latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&l, 0.50).as_secs_f64() * 1e3,
        percentile(&l, 0.90).as_secs_f64() * 1e3,
        percentile(&l, 0.99).as_secs_f64() * 1e3,
        l.last().unwrap().as_secs_f64() * 1e3
    );
}
