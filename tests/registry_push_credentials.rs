//! Where registry credentials go. A real TLS `docker-registry` with
//! htpasswd (Basic) auth sits behind the fault proxy, which moves upload
//! sessions and blob downloads to other hosts the test listens on, and
//! records what each of them received. Credentials go only to the origin
//! that challenged for them, and never leave HTTPS.
mod faults_support;
mod regsupport;

use std::path::{Path, PathBuf};

use dockless::name::Reference;
use dockless::remote::pull::PullError;
use dockless::remote::{push, BaseBlob, LocalBlob, Options, Puller, PushOutcome, RegistryError};
use dockless::store::BlobStore;
use faults_support::{rewrite_location, Action, FaultProxy, Req, Rule, Seen};
use regsupport::*;

const USER: &str = "tester";
const PASS: &str = "s3cret-Pa55";

fn creds() -> String {
    format!("{USER}:{PASS}")
}

/// The registry, the TLS proxy in front of it (what dockless talks to),
/// and the docker config holding the proxy's credentials.
struct Secured {
    reg: Registry,
    proxy: FaultProxy,
    certs: Certs,
    _cfg: tempfile::TempDir,
    _env: tokio::sync::MutexGuard<'static, ()>,
}

impl Secured {
    async fn start() -> Secured {
        init_tracing();
        let env = env_lock().await;
        let certs = Certs::generate();
        let reg = Registry::start(RegistryCfg {
            certs: Some(&certs),
            htpasswd: Some((USER, PASS)),
            ..Default::default()
        });
        let proxy = FaultProxy::start_tls(&reg.addr(), &certs).await;
        let cfg = docker_config(serde_json::json!({
            "auths": {
                proxy.addr.clone(): { "auth": basic_b64(USER, PASS) },
                reg.addr(): { "auth": basic_b64(USER, PASS) },
            }
        }));
        Secured {
            reg,
            proxy,
            certs,
            _cfg: cfg,
            _env: env,
        }
    }

    fn opts(&self) -> Options {
        Options {
            ca_certs: vec![self.certs.ca()],
            max_attempts: 2,
            ..Options::default()
        }
    }

    /// A plain-HTTP listener that forwards to the registry over TLS and
    /// records what it receives.
    async fn plain_listener(&self) -> FaultProxy {
        FaultProxy::start_plain_to_tls(&self.reg.addr(), &self.certs.ca()).await
    }

    /// The registry's upload sessions move to the proxy's second port.
    fn uploads_go_to_alt_port(&self) {
        let alt = self.proxy.alt_addr.clone();
        self.proxy
            .add(rewrite_location(move |pq| format!("https://{alt}{pq}")));
    }

    /// Requests to the proxy's second port, another origin, are authorized
    /// by the proxy itself, as a storage front with signed URLs would.
    fn alt_port_authorizes_itself(&self) {
        self.proxy.add(
            Rule::new(
                |r: &Req| r.listener == 1,
                Action::AddHeader("Authorization", format!("Basic {}", basic_b64(USER, PASS))),
            )
            .always(),
        );
    }

    /// An image pushed straight to the registry as `creds/{repo}:1`: its
    /// layer, its reference through the proxy, and the layer's blob path.
    async fn pushed_layer(&self, work: &Path, repo: &str) -> (LocalBlob, Reference, String) {
        let img = build_image(work, repo, 64 * 1024);
        let target = Reference::parse_tag(&format!("{}/creds/{repo}:1", self.reg.addr())).unwrap();
        push(&img, &target, &self.opts())
            .await
            .expect("push the source image");
        let via_proxy = Reference::parse(&format!("{}/creds/{repo}:1", self.proxy.addr)).unwrap();
        let layer = img.layers[0].clone();
        let path = format!("/v2/creds/{repo}/blobs/{}", layer.digest);
        (layer, via_proxy, path)
    }

    /// Downloads `layer` of `image` through the proxy into a new store.
    async fn fetch_layer(
        &self,
        work: &Path,
        image: &Reference,
        layer: &LocalBlob,
    ) -> Result<PathBuf, PullError> {
        let store = BlobStore::open(work.join("store")).unwrap();
        let opts = Options {
            ca_certs: vec![self.certs.ca()],
            ..Options::default()
        };
        let blob = BaseBlob {
            image: image.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        };
        Puller::for_images(&opts, [image])
            .fetch_blob(&blob, &store)
            .await
    }

    /// What the proxy saw on its second port (another origin), and on the
    /// registry's own.
    fn seen_by_origin(&self) -> (Vec<Seen>, Vec<Seen>) {
        self.proxy
            .seen()
            .into_iter()
            .partition(|x| x.req.listener == 1)
    }

    /// Pushes a fresh image through the proxy as `creds/{repo}:1`.
    async fn push_through_proxy(&self, repo: &str) -> Result<PushOutcome, RegistryError> {
        let work = tempfile::tempdir().unwrap();
        let img = build_image(work.path(), repo, 64 * 1024);
        let target = Reference::parse_tag(&format!("{}/creds/{repo}:1", self.proxy.addr)).unwrap();
        push(&img, &target, &self.opts()).await
    }

    /// The error names the registry, the plain-HTTP `location` it pointed
    /// to (without its query), and `plain`, the host there, got nothing.
    fn assert_downgrade_refused(
        &self,
        err: &dyn std::fmt::Display,
        location: &str,
        plain: &FaultProxy,
    ) {
        let msg = err.to_string();
        assert!(
            msg.contains(&self.proxy.addr) && msg.contains(location) && msg.contains("plain HTTP"),
            "{msg}"
        );
        assert!(!msg.contains("_state") && !msg.contains(PASS), "{msg}");
        assert!(
            plain.seen().is_empty(),
            "nothing may go to the plain-HTTP host: {:?}",
            plain.seen()
        );
    }
}

fn with_credentials(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.req.header("authorization").is_some())
        .map(|s| {
            format!(
                "{} {} (listener {})",
                s.req.method,
                s.req.path(),
                s.req.listener
            )
        })
        .collect()
}

/// An upload `Location` on another host:port: the upload goes there with
/// no `Authorization` header, and the push still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_location_on_another_host_gets_no_credentials() {
    let s = Secured::start().await;
    s.uploads_go_to_alt_port();
    s.alt_port_authorizes_itself();
    let out = s
        .push_through_proxy("elsewhere")
        .await
        .expect("push with uploads on another host");
    s.reg
        .verify("creds/elsewhere:1", &out.manifest_digest, Some(&creds()));

    let (on_alt, on_registry) = s.seen_by_origin();
    assert!(
        on_alt.iter().any(|x| x.req.method == "PUT"),
        "the uploads went to the Location's host: {on_alt:?}"
    );
    assert_eq!(with_credentials(&on_alt), Vec::<String>::new());
    // The registry itself challenged, and got them.
    assert!(!with_credentials(&on_registry).is_empty());
}

/// An upload host that asks for credentials itself does not get them: the
/// push fails, saying so, and leaves no tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_host_asking_for_credentials_fails_clearly() {
    let s = Secured::start().await;
    s.uploads_go_to_alt_port();
    let err = s
        .push_through_proxy("asks")
        .await
        .expect_err("the upload host answers 401 without credentials");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}, where the registry sent", s.proxy.alt_addr))
            && msg.contains(&format!("only sent to {} itself", s.proxy.addr)),
        "{msg}"
    );
    let (on_alt, _) = s.seen_by_origin();
    assert!(on_alt.iter().any(|x| x.status == 401), "{on_alt:?}");
    assert_eq!(with_credentials(&on_alt), Vec::<String>::new());
    assert!(s.reg.tag_absent("creds/asks:1", Some(&creds())));
}

/// An upload `Location` on `http://`: refused before anything is sent
/// there, with an error naming the registry and the Location; no tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_location_on_plain_http_is_refused() {
    let s = Secured::start().await;
    let plain = s.plain_listener().await;
    let to = plain.addr.clone();
    s.proxy
        .add(rewrite_location(move |pq| format!("http://{to}{pq}")));
    let err = s
        .push_through_proxy("downgrade")
        .await
        .expect_err("a Location on plain HTTP must fail the push");
    let location = format!("http://{}/v2/creds/downgrade/blobs/uploads/", plain.addr);
    s.assert_downgrade_refused(&err, &location, &plain);
    assert!(s.reg.tag_absent("creds/downgrade:1", Some(&creds())));
}

/// A blob GET redirected to another host (a registry's storage): reqwest
/// follows it without the `Authorization` header, and the blob arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirect_to_another_host_gets_no_credentials() {
    let s = Secured::start().await;
    let work = tempfile::tempdir().unwrap();
    let (layer, image, path) = s.pushed_layer(work.path(), "redirected").await;
    let alt = s.proxy.alt_addr.clone();
    let wanted = path.clone();
    s.proxy.add(Rule::new(
        move |r: &Req| r.listener == 0 && r.path() == wanted && r.header("authorization").is_some(),
        Action::Reply(
            307,
            format!("Location: https://{alt}{path}\r\n"),
            String::new(),
        ),
    ));
    s.alt_port_authorizes_itself();
    let got = s
        .fetch_layer(work.path(), &image, &layer)
        .await
        .expect("the blob through the redirect");
    assert_eq!(
        std::fs::read(got).unwrap(),
        std::fs::read(&layer.path).unwrap()
    );

    assert_eq!(s.proxy.faults()["emulated"], 1, "{:?}", s.proxy.seen());
    let (on_alt, _) = s.seen_by_origin();
    assert_eq!(on_alt.len(), 1, "{on_alt:?}");
    assert_eq!(with_credentials(&on_alt), Vec::<String>::new());
}

/// A blob GET redirected from HTTPS to plain HTTP is refused, and the
/// plain-HTTP host receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirect_to_plain_http_is_refused() {
    let s = Secured::start().await;
    let work = tempfile::tempdir().unwrap();
    let (layer, image, path) = s.pushed_layer(work.path(), "downgraded").await;
    let plain = s.plain_listener().await;
    let location = format!("http://{}{path}", plain.addr);
    let wanted = path.clone();
    s.proxy.add(
        Rule::new(
            move |r: &Req| r.path() == wanted,
            Action::Reply(307, format!("Location: {location}\r\n"), String::new()),
        )
        .always(),
    );
    let err = s
        .fetch_layer(work.path(), &image, &layer)
        .await
        .expect_err("a redirect to plain HTTP must fail");
    s.assert_downgrade_refused(&err, &location, &plain);
}
