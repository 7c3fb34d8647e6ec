//! A proxy in front of a real registry that refuses monolithic blob PUTs and
//! PATCH chunks over 4 MiB, forcing the chunked upload path.
mod regsupport;

use std::sync::{Arc, Mutex};

use dockless::registry::{push, PushOptions, Reference};
use regsupport::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const CAP: u64 = 4 * 1024 * 1024;

#[derive(Default, Debug)]
struct Seen {
    refused_puts: usize,
    patch_sizes: Vec<u64>,
    refused_patches: usize,
}

async fn read_head(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn drain(r: &mut (impl AsyncRead + Unpin), mut n: u64) {
    let mut tmp = vec![0u8; 65536];
    while n > 0 {
        let want = tmp.len().min(n as usize);
        match r.read(&mut tmp[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n -= k as u64,
        }
    }
}

async fn handle(mut client: TcpStream, upstream: String, seen: Arc<Mutex<Seen>>) {
    let Some((head, early)) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let method = request_line
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut len = 0u64;
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            headers.push(l.to_string());
        }
    }
    let upload = path.contains("/blobs/uploads/");
    let refuse = if upload && method == "PUT" && len > 0 {
        seen.lock().unwrap().refused_puts += 1;
        Some("405 Method Not Allowed")
    } else if upload && method == "PATCH" && len > CAP {
        seen.lock().unwrap().refused_patches += 1;
        Some("413 Payload Too Large")
    } else {
        if upload && method == "PATCH" {
            seen.lock().unwrap().patch_sizes.push(len);
        }
        None
    };
    let mut body_rest = len.saturating_sub(early.len() as u64);
    if let Some(status) = refuse {
        drain(&mut client, body_rest).await;
        let msg = r#"{"errors":[{"code":"UNSUPPORTED","message":"refused by test proxy"}]}"#;
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        );
        let _ = client.write_all(resp.as_bytes()).await;
        return;
    }
    let Ok(mut up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let mut out = format!("{request_line}\r\n");
    for h in &headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).await.is_err() || up.write_all(&early).await.is_err() {
        return;
    }
    let mut tmp = vec![0u8; 65536];
    while body_rest > 0 {
        let want = tmp.len().min(body_rest as usize);
        let Ok(n) = client.read(&mut tmp[..want]).await else {
            return;
        };
        if n == 0 || up.write_all(&tmp[..n]).await.is_err() {
            return;
        }
        body_rest -= n as u64;
    }
    let _ = tokio::io::copy(&mut up, &mut client).await;
    let _ = client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_fallback_when_put_refused_and_chunks_capped() {
    init_tracing();
    let _g = env_lock().await;
    let _cfg = docker_config(serde_json::json!({}));
    let reg = Registry::start(RegistryCfg::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (s2, up) = (seen.clone(), reg.addr());
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            tokio::spawn(handle(c, up.clone(), s2.clone()));
        }
    });

    let work = tempfile::tempdir().unwrap();
    // ~9 MiB of noise: three chunks at the 4 MiB default.
    let img = build_image(work.path(), "capped", 9 * 1024 * 1024);
    // Ask for 8 MiB chunks: the proxy's 413 must make the client shrink them.
    let opts = PushOptions {
        insecure: true,
        chunk_size: 8 * 1024 * 1024,
        ..PushOptions::default()
    };
    let target = Reference::parse(&format!("{proxy}/cap/app:1")).unwrap();
    let out = push(&img, &target, &opts)
        .await
        .expect("push through proxy");
    task.abort();
    assert_eq!(sorted(out.uploaded.clone()), all_digests(&img));
    reg.verify("cap/app:1", &out.manifest_digest, None);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.refused_puts, 2, "{seen:?}");
    assert!(seen.refused_patches >= 1, "{seen:?}");
    assert!(seen.patch_sizes.iter().all(|&s| s <= CAP), "{seen:?}");
    let layer_patched: u64 = seen.patch_sizes.iter().sum();
    assert_eq!(
        layer_patched,
        img.layers[0].size + img.config.size,
        "{seen:?}"
    );
}

/// A blob that is not on disk, streamed from another registry: the target
/// refuses the monolithic PUT, so the client sends capped PATCH chunks, each
/// read from the source with a Range GET, and the target checks the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_blob_falls_back_to_ranged_chunks() {
    init_tracing();
    let _g = env_lock().await;
    let _cfg = docker_config(serde_json::json!({}));
    let source = Registry::start(RegistryCfg::default());
    let target_reg = Registry::start(RegistryCfg::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (s2, up) = (seen.clone(), target_reg.addr());
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            tokio::spawn(handle(c, up.clone(), s2.clone()));
        }
    });

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "streamed", 9 * 1024 * 1024);
    let opts = PushOptions {
        insecure: true,
        ..PushOptions::default()
    };
    let src_ref = Reference::parse(&format!("{}/src/app:1", source.addr())).unwrap();
    push(&img, &src_ref, &opts)
        .await
        .expect("push to the source");

    let mut streamed = img.clone();
    streamed.layers[0].path = work.path().join("not-in-the-store");
    streamed.layers[0].source = Some(dockless::registry::RemoteBlob {
        registry: source.addr(),
        repository: "src/app".into(),
        insecure: true,
        ca_certs: Vec::new(),
    });
    let target = Reference::parse(&format!("{proxy}/dst/app:1")).unwrap();
    let out = push(&streamed, &target, &opts)
        .await
        .expect("streamed push through proxy");
    task.abort();
    assert_eq!(sorted(out.uploaded.clone()), all_digests(&img));
    target_reg.verify("dst/app:1", &out.manifest_digest, None);
    assert!(!work.path().join("not-in-the-store").exists());

    let seen = seen.lock().unwrap();
    assert!(seen.refused_puts >= 1, "{seen:?}");
    assert!(seen.patch_sizes.iter().all(|&s| s <= CAP), "{seen:?}");
    let patched: u64 = seen.patch_sizes.iter().sum();
    assert_eq!(patched, img.layers[0].size + img.config.size, "{seen:?}");
}
