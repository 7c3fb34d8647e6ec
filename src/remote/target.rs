//! The push target `registry/repository:tag`.

use super::error::{RegistryError, Result};

/// `registry/repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// e.g. `127.0.0.1:5000`, `docker.io`
    pub registry: String,
    /// e.g. `team/hello`, `library/alpine`
    pub repository: String,
    pub tag: String,
}

impl Reference {
    /// Parse `[host[:port]/]repo[:tag]`. Names without a registry host go to
    /// docker.io, single-component names there get `library/`. A missing tag
    /// means `latest`. Digest references are refused (a push needs a tag).
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason: &str| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains('@') {
            return Err(bad("digest references cannot be pushed; use a tag"));
        }
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty or contains whitespace"));
        }
        let (first, rest) = match s.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (s, None),
        };
        // Same rule as docker: a first component with '.', ':' or "localhost" is a host.
        let (registry, remainder) = match rest {
            Some(r) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), r)
            }
            _ => ("docker.io".to_string(), s),
        };
        if registry.is_empty() {
            return Err(bad("empty registry host"));
        }
        let last_slash = remainder.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match remainder[last_slash..].rfind(':') {
            Some(i) => (
                &remainder[..last_slash + i],
                &remainder[last_slash + i + 1..],
            ),
            None => (remainder, "latest"),
        };
        if !valid_tag(tag) {
            return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        if !valid_repository(repo) {
            return Err(bad(
                "repository must be lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        Ok(Reference {
            registry,
            repository,
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_repository(r: &str) -> bool {
    !r.is_empty() && r.len() <= 255 && r.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    // Separators: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parsing() {
        let r = Reference::parse("127.0.0.1:5000/team/hello:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "team/hello", "v1")
        );
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_str()),
            ("localhost", "latest")
        );
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        let r = Reference::parse("me/app:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("docker.io", "me/app", "1.0")
        );
        let r = Reference::parse("reg.io:443/a/b").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("a/b", "latest"));
        for bad in [
            "",
            "UPPER/x",
            "reg.io/a//b",
            "a:",
            "x@sha256:00",
            "reg.io/-a",
            "a b",
            "reg.io/a:t/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
