//! Supply chain documents for a built image: its SBOM (`sbom`), its SLSA
//! provenance (`provenance`), signatures in cosign's formats (`sign`,
//! `dsse`, `verify`), and where they go (`attach`).

pub mod sbom;
