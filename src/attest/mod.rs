//! Supply chain documents for a built image: its SBOM (`sbom`), its SLSA
//! provenance (`provenance`), in-toto statements that carry them
//! (`statement`), signatures in cosign's formats (`sign`), and where they
//! go (`attach`).

pub mod attach;
pub mod provenance;
pub mod sbom;
pub mod sign;
pub mod statement;
pub mod supply;
pub mod verify;
