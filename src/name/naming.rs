//! Image names as `build` takes them: `name[:tag]`, checked with Docker's rules.

#[derive(Debug, thiserror::Error)]
#[error("invalid image name {0:?}: {1}")]
pub struct NameError(pub String, pub &'static str);

/// A repository name and tag, e.g. `team/hello` and `v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTag {
    pub name: String,
    pub tag: String,
}

impl std::fmt::Display for NameTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl NameTag {
    /// Splits at the last `:` that comes after the last `/`, so a registry port is not a tag.
    pub fn parse(text: &str) -> Result<NameTag, NameError> {
        let err = |why| NameError(text.to_string(), why);
        let last_slash = text.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match text[last_slash..].rfind(':') {
            Some(i) => (&text[..last_slash + i], &text[last_slash + i + 1..]),
            None => (text, "latest"),
        };
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        if !valid_tag(tag) {
            return Err(err(
                "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        if name.contains('@') {
            return Err(err("digests cannot be used as a build name"));
        }
        let path = match name.split_once('/') {
            Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
            _ => name,
        };
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(err("name components are lowercase letters and digits, separated by '.', '_', '__' or '-'"));
        }
        Ok(NameTag {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !part.starts_with(alnum) || !part.ends_with(alnum) {
        return false;
    }
    // Separators: one '.', one or two '_', or any run of '-'.
    let mut run = String::new();
    for c in part.chars() {
        if alnum(c) {
            if !(run.is_empty()
                || run == "."
                || run == "_"
                || run == "__"
                || run.chars().all(|r| r == '-'))
            {
                return false;
            }
            run.clear();
        } else if matches!(c, '.' | '_' | '-') {
            run.push(c);
        } else {
            return false;
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let n = NameTag::parse("hello:v1").unwrap();
        assert_eq!((n.name.as_str(), n.tag.as_str()), ("hello", "v1"));
        let n = NameTag::parse("127.0.0.1:5000/team/hello").unwrap();
        assert_eq!(
            (n.name.as_str(), n.tag.as_str()),
            ("127.0.0.1:5000/team/hello", "latest")
        );
        assert_eq!(NameTag::parse("a__b-c.d:1.0_x").unwrap().tag, "1.0_x");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "Hello:v1",
            "hello:",
            "hello:-x",
            ":v1",
            "a..b",
            "-a",
            "a@sha256:00",
            "a b",
        ] {
            assert!(NameTag::parse(bad).is_err(), "{bad}");
        }
    }
}
