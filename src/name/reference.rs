//! Image references as docker normalises them: `python:3.12` is
//! `docker.io/library/python:3.12`; a digest pins the content.

use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/python`, `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let err = |reason| ReferenceError {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("empty or contains whitespace"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if crate::digest::hex_part(d).is_none() {
                    return Err(err(
                        "the digest must be sha256: followed by 64 lowercase hex digits",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(err("a tag is 1-128 letters, digits, '_', '.' or '-'"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(err(
                "repository path components are lowercase letters, digits and single separators",
            ));
        }
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when pinned, else the tag (default `latest`).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

fn valid_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !part.is_empty()
        && part.starts_with(alnum)
        && part.ends_with(alnum)
        && part
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
        && !part.contains("..")
        && !part.contains("___")
}

impl fmt::Display for ImageRef {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("python:3.12-slim").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/python:3.12-slim");
        let r = ImageRef::parse("gcr.io/distroless/static").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("gcr.io", "distroless/static", "latest")
        );
        let r = ImageRef::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "team/app")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/base:1@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert_eq!(ImageRef::parse("user/app").unwrap().repository, "user/app");
    }

    #[test]
    fn rejects_invalid_references() {
        for bad in [
            "",
            "Python",
            "a b",
            "app:",
            "app@sha256:abc",
            "app:-x",
            "/app",
            "a//b",
            "app..x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
