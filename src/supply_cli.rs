//! The CLI's supply chain flags (`--sbom`, `--provenance`, `--sbom-format`,
//! `--sign-key`) and `dockless verify`.

use anyhow::Context as _;
use clap::Args;
use dockless::attest::sbom::SbomFormat;
use dockless::attest::sign::{PublicKey, Signer256};
use dockless::attest::supply::SupplyOptions;
use dockless::attest::verify::{self, Verified};
use dockless::name::Reference;
use std::path::PathBuf;

/// What `build` and `push` attach to the image.
#[derive(Args)]
pub struct SupplyFlags {
    /// Attach an SBOM (`--sbom=false` leaves it out).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set)]
    sbom: bool,
    /// Attach SLSA provenance (`--provenance=false` leaves it out).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set)]
    provenance: bool,
    /// SBOM document format: spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.5 JSON).
    #[arg(long, default_value = "spdx", value_parser = ["spdx", "cyclonedx"])]
    sbom_format: String,
    /// Sign the image and its attestations with this ECDSA P-256 PEM key (or
    /// cosign's encrypted key, password in COSIGN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Keyless signing (Fulcio/Rekor).
    #[arg(long, hide = true)]
    keyless: bool,
}

/// No keyless signing: there is no Fulcio/Rekor client here.
const KEYLESS: &str = "keyless signing (Fulcio/Rekor) is not supported yet: \
     sign with --sign-key FILE (cosign generate-key-pair makes one)";

impl SupplyFlags {
    /// Whether a key (or keyless signing) was asked for.
    pub fn signs(&self) -> bool {
        self.sign_key.is_some() || self.keyless
    }

    pub fn options(&self, dockerfile: Option<&std::path::Path>) -> anyhow::Result<SupplyOptions> {
        if self.keyless {
            anyhow::bail!(KEYLESS);
        }
        let sign_key = match &self.sign_key {
            Some(path) => Some(Signer256::load_with_env(path)?),
            None => None,
        };
        Ok(SupplyOptions {
            sbom: self
                .sbom
                .then(|| SbomFormat::parse(&self.sbom_format))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            provenance: self.provenance,
            sign_key,
            source: None,
            dockerfile: dockerfile
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "Dockerfile".into()),
            source_date_epoch: dockless::cache::source_date_epoch_if_set()?,
            invocation_id: None,
        })
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...
    image: String,
    /// The public key (PEM "PUBLIC KEY", e.g. cosign.pub).
    #[arg(long, value_name = "PUB", required_unless_present = "keyless")]
    key: Option<PathBuf>,
    /// Keyless verification (Fulcio/Rekor).
    #[arg(long, hide = true)]
    keyless: bool,
    /// Use plain HTTP for the image's registry.
    #[arg(long)]
    insecure: bool,
    /// Extra CA certificate (PEM) to trust; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
}

/// Checks the signatures and lists the attachments on stdout; Err when no
/// signature is the key's or an attestation does not verify.
pub fn run_verify(args: VerifyArgs) -> anyhow::Result<Verified> {
    if args.keyless {
        anyhow::bail!(KEYLESS);
    }
    let key_path = args.key.clone().unwrap_or_default();
    let key = PublicKey::load(&key_path)?;
    let image = Reference::parse(&args.image)?;
    let mut opts = dockless::remote::Options {
        ca_certs: args.ca_certs.clone(),
        ..Default::default()
    };
    if args.insecure {
        opts = opts.insecure(image.registry());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let verified = runtime
        .block_on(verify::verify(&image, &key, &opts))
        .with_context(|| format!("verifying with {}", key_path.display()))?;
    let name = format!("{}/{}", image.registry(), image.repository());
    println!(
        "{name}@{}: {} signature(s) verified",
        verified.digest, verified.signatures
    );
    for a in &verified.attestations {
        println!("attestation verified: {a}");
    }
    for a in &verified.unverified {
        println!("attestation not signed by this key (ignored): {a}");
    }
    for (kind, digests) in &verified.referrers {
        for d in digests {
            println!("referrer: {kind} {d}");
        }
    }
    Ok(verified)
}
