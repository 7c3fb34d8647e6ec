//! Why a build, or one image of it, failed, with the typed cause kept, and
//! which of those failures are worth waiting out: a full disk under
//! `state_dir`, or a registry or git server that is unavailable.

use crate::cache::EpochError;
use crate::name::Reference;
use crate::pipeline::PipelineError;
use crate::serve::gitfetch::FetchError;
use crate::serve::imagespec::SpecError;
use std::error::Error;
use std::io;

/// Why a whole build failed before its images were built.
#[derive(Debug, thiserror::Error)]
pub(super) enum BuildFailure {
    #[error("fetching {commit}: {source}")]
    Fetch {
        commit: String,
        #[source]
        source: FetchError,
    },
    /// The fetch's thread panicked.
    #[error("fetching {commit}: {source}")]
    FetchAborted {
        commit: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    ImageSpec(#[from] SpecError),
    #[error("image.json lists no images")]
    NoImages,
}

/// Why one image failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ImageFailure {
    /// Its `image.json` entry cannot be built (the message names the field).
    #[error("{0}")]
    Entry(String),
    #[error(transparent)]
    SourceDateEpoch(#[from] EpochError),
    #[error("build: {0}")]
    Build(#[source] PipelineError),
    #[error("push to {target}: {source}")]
    Push {
        target: Reference,
        #[source]
        source: PipelineError,
    },
}

impl ImageFailure {
    /// The pipeline's error, told apart by the step that failed.
    pub(super) fn from_pipeline(error: PipelineError, target: &Reference) -> ImageFailure {
        match error {
            PipelineError::Build(_) | PipelineError::BuildAborted(_) => ImageFailure::Build(error),
            _ => ImageFailure::Push {
                target: target.clone(),
                source: error,
            },
        }
    }
}

/// An error as the service's users read it: the registry client's hints
/// name CLI flags; the service is set up in dockless.toml instead.
pub(super) fn in_config_terms(message: &str) -> String {
    message
        .replace(
            "--insecure (or --insecure-registry HOST)",
            "insecure_registry = true in dockless.toml",
        )
        .replace(
            "drop --insecure (or --insecure-registry)",
            "set insecure_registry = false in dockless.toml",
        )
        .replace("any --ca-cert", "ca_cert in dockless.toml")
}

/// What stopped a build that is worth waiting out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hindrance {
    /// The disk (or quota) under `state_dir` is full.
    DiskFull,
    /// A server could not be reached: "the registry" or "the git server".
    Unavailable(&'static str),
}

impl BuildFailure {
    pub(super) fn hindrance(&self) -> Option<Hindrance> {
        if caused_by_full_disk(self) {
            return Some(Hindrance::DiskFull);
        }
        match self {
            BuildFailure::Fetch { source, .. } if source.is_unavailable() => {
                Some(Hindrance::Unavailable("the git server"))
            }
            _ => None,
        }
    }
}

impl ImageFailure {
    pub(super) fn hindrance(&self) -> Option<Hindrance> {
        if caused_by_full_disk(self) {
            return Some(Hindrance::DiskFull);
        }
        match self {
            ImageFailure::Push {
                source: PipelineError::Push(e),
                ..
            } if e.is_unavailable() => Some(Hindrance::Unavailable("the registry")),
            _ => None,
        }
    }
}

/// Whether a full disk or quota (ENOSPC, EDQUOT) caused `error`: an
/// `io::Error` of that kind anywhere in its chain of sources, or git's
/// message for it.
pub(super) fn caused_by_full_disk(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
            // An `io::Error` made from another error reports that error's
            // source, not the error itself.
            if io.get_ref().is_some_and(|inner| caused_by_full_disk(inner)) {
                return true;
            }
        }
        if e.downcast_ref::<FetchError>()
            .is_some_and(FetchError::git_found_disk_full)
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn hints_name_config_keys() {
        let cli = "TLS error with r:5000: server certificate is signed by an unknown \
                   authority (not in the OS trust store, any --ca-cert, nor certs.d/HOST:PORT/*.crt)";
        let shown = in_config_terms(cli);
        assert!(shown.contains("ca_cert in dockless.toml") && !shown.contains("--ca-cert"));
    }

    fn os_error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn a_full_disk_is_found_through_the_sources() {
        let store = |source| StoreError::Io {
            path: "/state/cache/blobs".into(),
            source,
        };
        let in_build = |e: StoreError| {
            ImageFailure::Build(PipelineError::Build(crate::build::BuildError::Store(e)))
        };
        for code in [libc::ENOSPC, libc::EDQUOT] {
            assert!(caused_by_full_disk(&in_build(store(os_error(code)))));
        }
        // Quoted by an instruction's error, the cause kept.
        let extract = crate::build::BuildError::Instruction {
            file: "Dockerfile".into(),
            line: 3,
            message: "ADD app.tar /: no space".into(),
            cause: Some(Box::new(crate::build::archive::ArchiveError::Io {
                archive: "app.tar".into(),
                source: os_error(libc::ENOSPC),
            })),
        };
        let extract = ImageFailure::Build(PipelineError::Build(extract));
        assert_eq!(extract.hindrance(), Some(Hindrance::DiskFull));
        // Wrapped in another io::Error, as readers and writers do.
        let wrapped = io::Error::other(store(os_error(libc::ENOSPC)));
        assert!(caused_by_full_disk(&in_build(store(wrapped))));
        let git = |stderr: &str| BuildFailure::Fetch {
            commit: "abc".into(),
            source: FetchError::Git {
                what: "fetch".into(),
                stderr: stderr.into(),
            },
        };
        let full = git("fatal: write error: No space left on device");
        assert_eq!(full.hindrance(), Some(Hindrance::DiskFull));
        let spawn = BuildFailure::Fetch {
            commit: "abc".into(),
            source: FetchError::Spawn(os_error(libc::ENOSPC)),
        };
        assert_eq!(spawn.hindrance(), Some(Hindrance::DiskFull));

        // Other errors are not, whatever their text says.
        for code in [libc::EACCES, libc::EIO] {
            assert!(!caused_by_full_disk(&in_build(store(os_error(code)))));
        }
        let quoted =
            ImageFailure::Entry("context \"No space left on device (os error 28)\"".into());
        assert_eq!(quoted.hindrance(), None);
        let unreachable = git("fatal: unable to access: Could not resolve host: git.example");
        assert_eq!(
            unreachable.hindrance(),
            Some(Hindrance::Unavailable("the git server"))
        );
        assert_eq!(git("fatal: not our ref").hindrance(), None);
    }

    #[test]
    fn an_unreachable_registry_is_worth_waiting_for_only_in_the_push() {
        use crate::remote::publish::PublishError;
        use crate::remote::RegistryError;
        let target = Reference::parse("127.0.0.1:5000/acme/api:1").unwrap();
        let refused = || {
            PublishError::Registry(RegistryError::Connect {
                host: "127.0.0.1:5000".into(),
                reason: "connection refused".into(),
            })
        };
        let push = ImageFailure::from_pipeline(PipelineError::Push(refused()), &target);
        assert_eq!(push.to_string(), format!("push to {target}: {}", refused()));
        assert_eq!(
            push.hindrance(),
            Some(Hindrance::Unavailable("the registry"))
        );
        let denied = PublishError::Registry(RegistryError::Denied {
            registry: "127.0.0.1:5000".into(),
            operation: "push".into(),
            message: "no".into(),
        });
        let push = ImageFailure::from_pipeline(PipelineError::Push(denied), &target);
        assert_eq!(push.hindrance(), None);
    }
}
