//! Image references, parsed once with Docker's rules (distribution/reference
//! `ParseNormalizedNamed`, cf. go-containerregistry's `pkg/name`):
//! `python:3.12` is `docker.io/library/python:3.12`, `index.docker.io` is
//! `docker.io`, and a first component is a registry host when it has a
//! `.`, a `:`, a capital letter or is `localhost`. `FROM`, `COPY --from`,
//! `build -t`, push targets and the service's image names all use it.

mod grammar;
#[cfg(test)]
mod tests;

use std::fmt;

pub use grammar::Problem;

/// Docker Hub's name, and its legacy one.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub's namespace for single-component names.
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid image {what} {text:?}: {problem}")]
pub struct NameError {
    /// "reference" (what to read) or "name" (what to tag).
    pub what: &'static str,
    pub text: String,
    pub problem: Problem,
}

/// A registry image: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    registry: String,
    /// `library/python`, `team/app`.
    repository: String,
    tag: Option<String>,
    /// `sha256:<hex>`
    digest: Option<String>,
    /// The name (without tag or digest) as the user wrote it: `hello`,
    /// `127.0.0.1:5000/team/hello`.
    written: String,
}

impl Reference {
    /// An image to read (`FROM`, `COPY --from`): a tag, a digest, both or
    /// neither (then `latest` is asked for, but not shown).
    pub fn parse(text: &str) -> Result<Reference, NameError> {
        parse_normalized(text).map_err(|problem| NameError {
            what: "reference",
            text: text.to_string(),
            problem,
        })
    }

    /// A name to tag an image with (`build -t`, a push target): no digest,
    /// and `latest` when no tag is given.
    pub fn parse_tag(text: &str) -> Result<Reference, NameError> {
        let fail = |problem| NameError {
            what: "name",
            text: text.to_string(),
            problem,
        };
        let mut reference = parse_normalized(text).map_err(fail)?;
        if reference.digest.is_some() {
            return Err(fail(Problem::DigestNotTag));
        }
        reference.tag.get_or_insert_with(|| DEFAULT_TAG.into());
        Ok(reference)
    }

    /// The valid name to tag with nearest to `text`, which is not one:
    /// the name lower-cased, and characters a tag cannot hold (a space,
    /// `+`) made `-` (`app:1.0 beta` gives `app:1.0-beta`).
    pub fn suggest_tag(text: &str) -> Option<String> {
        let (name, tag) = match text.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (text, None),
        };
        let mut fixed = name.trim().to_ascii_lowercase().replace(' ', "-");
        if let Some(tag) = tag {
            let tag: String = tag
                .trim()
                .chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
                    _ => '-',
                })
                .collect();
            let tag = tag.trim_start_matches(['.', '-']);
            fixed = format!("{fixed}:{}", &tag[..tag.len().min(128)]);
        }
        (fixed != text && Reference::parse_tag(&fixed).is_ok()).then_some(fixed)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag
    /// (`latest` when none was given).
    pub fn identifier(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The name as written, without tag or digest: `hello`,
    /// `127.0.0.1:5000/team/hello`.
    pub fn name(&self) -> &str {
        &self.written
    }

    /// Whether the text named its registry (else it is Docker Hub by default).
    pub fn names_registry(&self) -> bool {
        first_is_domain(&self.written)
    }

    /// The reference as the user wrote its name: `hello:v1`, not
    /// `docker.io/library/hello:v1`.
    pub fn as_written(&self) -> String {
        let mut s = self.written.clone();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// distribution's `ParseNormalizedNamed`.
fn parse_normalized(text: &str) -> Result<Reference, Problem> {
    if grammar::is_identifier(text) {
        return Err(Problem::Identifier);
    }
    let (registry, remainder) = split_docker_domain(text);
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_ascii_lowercase() != remote {
        return Err(Problem::Uppercase);
    }
    let full = format!("{registry}/{remainder}");
    let parts = grammar::split(&full)?;
    // The registry picked above must read as one (`foo_bar.com/x` would
    // otherwise become a path on no registry at all).
    if parts.domain != Some(registry) {
        return Err(Problem::Format);
    }
    Ok(Reference {
        registry: registry.to_string(),
        repository: parts.path.to_string(),
        tag: parts.tag.map(str::to_string),
        digest: parts.digest.map(str::to_string),
        written: written_name(text).to_string(),
    })
}

/// The name part of a valid reference (before its tag or digest).
fn written_name(text: &str) -> &str {
    let rest = text.split('@').next().unwrap_or_default();
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[after_slash..].find(':') {
        Some(i) => &rest[..after_slash + i],
        None => rest,
    }
}

/// Whether the first of several components names a registry host.
fn first_is_domain(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => {
            first == "localhost"
                || first.contains(['.', ':'])
                || first.to_ascii_lowercase() != first
        }
        None => false,
    }
}

/// distribution's `splitDockerDomain`: (registry, the rest), with Docker
/// Hub's defaults filled in.
fn split_docker_domain(text: &str) -> (&str, String) {
    let (registry, rest) = match text.split_once('/') {
        Some((first, rest)) if first == DOCKER_HUB_LEGACY => (DOCKER_HUB, rest),
        Some((first, rest)) if first_is_domain(text) => (first, rest),
        _ => (DOCKER_HUB, text),
    };
    if registry == DOCKER_HUB && !rest.contains('/') {
        return (registry, format!("{OFFICIAL_PREFIX}{rest}"));
    }
    (registry, rest.to_string())
}

/// The default name for a context folder: its base name, lowercased and cleaned.
pub fn default_name(context: &std::path::Path) -> String {
    let base = std::fs::canonicalize(context)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "image".into()
    } else {
        trimmed.into()
    }
}
