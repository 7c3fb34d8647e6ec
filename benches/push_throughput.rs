//! Push throughput of one large layer: dockless's registry client against
//! `skopeo copy` of the same OCI image, each into a fresh real `docker-registry`
//! on loopback. Prints MB/s and the ratio.
//!
//! Run: `cargo bench --bench push_throughput` (needs docker-registry and skopeo).

use dockless::image::{Image, ImageConfig};
use dockless::layer::{write_layer, LayerEntry, LayerOptions};
use dockless::name::Reference;
use dockless::platform::Platform;
use dockless::remote::publish::push_image;
use dockless::remote::{push, Options};
use dockless::store::BlobStore;
use std::process::Command;
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;
use support::{median, noise_file, start_registry};

const LAYER_MB: usize = 128;
const RUNS: usize = 3;

fn main() {
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("payload.bin");
    noise_file(&payload, LAYER_MB << 20, 0x9e3779b97f4a7c15);
    let store = BlobStore::open(work.path().join("store")).unwrap();
    let entry = LayerEntry::file("data/payload.bin", payload.clone(), (LAYER_MB << 20) as u64);
    let layer = write_layer(
        &[entry],
        &store,
        LayerOptions {
            mtime: 0,
            gzip_level: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let mb = layer.size as f64 / 1e6;
    let mut image = Image::new(ImageConfig::scratch(
        &Platform::host(),
        "1970-01-01T00:00:00Z",
    ));
    image.add_layer(layer, Default::default());
    let built = image.finish(&store).unwrap();
    let layout = work.path().join("layout");
    let artifact = dockless::image::Artifact::Image(Box::new(built.clone()));
    dockless::layout::write_oci_layout(&layout, &store, &artifact, &["bench".into()]).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nowhere = Reference::parse_tag("127.0.0.1:1/unused:v1").unwrap();
    let pushed = push_image(&store, &built, &Default::default(), &nowhere).unwrap();

    let mut ours = Vec::new();
    let mut skopeo = Vec::new();
    // A fresh registry for every push, so neither tool can mount or skip a
    // blob it pushed before (skopeo remembers blob locations across runs).
    for run in 0..RUNS {
        let dir = work.path().join(format!("reg-dockless-{run}"));
        std::fs::create_dir(&dir).unwrap();
        let (_registry, addr) = start_registry(&dir);
        let target = Reference::parse_tag(&format!("{addr}/dockless:v1")).unwrap();
        let start = Instant::now();
        let opts = Options::default().insecure(&addr);
        runtime.block_on(push(&pushed, &target, &opts)).unwrap();
        ours.push(start.elapsed().as_secs_f64());

        let dir = work.path().join(format!("reg-skopeo-{run}"));
        std::fs::create_dir(&dir).unwrap();
        let (_registry, addr) = start_registry(&dir);
        let start = Instant::now();
        let status = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bench", layout.display()))
            .arg(format!("docker://{addr}/skopeo:v1"))
            .status()
            .expect("skopeo (apt-get install skopeo)");
        assert!(status.success());
        skopeo.push(start.elapsed().as_secs_f64());
    }
    let (o, s) = (median(ours), median(skopeo));
    println!("push of a {mb:.1} MB layer to a fresh repository, median of {RUNS}:");
    println!("  dockless {o:.3} s ({:.0} MB/s)", mb / o);
    println!("  skopeo   {s:.3} s ({:.0} MB/s)", mb / s);
    println!("  ratio skopeo/dockless = {:.2}", s / o);
}
