//! Docker's reference grammar (distribution/reference, `regexp.go`), checked
//! piece by piece: `[domain/]path[:tag][@digest]`, with no normalisation.
//!
//! Hand-written rather than through `oci_spec::distribution::Reference`:
//! that one knows no IPv6 hosts, always adds `latest` (which would change
//! the `base.name` annotation, and so the digests, of images built FROM an
//! untagged digest), and checks the length after adding `library/`.

/// What is wrong with a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the name is empty")]
    Empty,
    #[error(
        "repository path components are lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    Format,
    #[error("repository names are lowercase")]
    Uppercase,
    #[error("the repository path is longer than 255 characters")]
    TooLong,
    #[error("a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")]
    Tag,
    #[error("the digest must be sha256: followed by 64 lowercase hex digits")]
    Digest,
    #[error("64 hex digits are an image ID, not a name")]
    Identifier,
    #[error("a digest cannot be a name to tag and push; use a tag")]
    DigestNotTag,
}

/// A reference split into its parts, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parts<'a> {
    pub(super) domain: Option<&'a str>,
    pub(super) path: &'a str,
    pub(super) tag: Option<&'a str>,
    pub(super) digest: Option<&'a str>,
}

/// Longest repository path (the domain not counted).
const MAX_PATH: usize = 255;

/// distribution's `Parse`. A reference that is only wrong for its capitals
/// says so, as distribution does.
pub(super) fn split(text: &str) -> Result<Parts<'_>, Problem> {
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    let parts = match split_exact(text) {
        Ok(parts) => parts,
        Err(problem) => {
            let lower = text.to_ascii_lowercase();
            return Err(if lower != text && split_exact(&lower).is_ok() {
                Problem::Uppercase
            } else {
                problem
            });
        }
    };
    if parts.path.len() > MAX_PATH {
        return Err(Problem::TooLong);
    }
    if let Some(digest) = parts.digest {
        check_sha256(digest)?;
    }
    Ok(parts)
}

/// The grammar alone: every part well formed.
fn split_exact(text: &str) -> Result<Parts<'_>, Problem> {
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) if is_digest(digest) => (rest, Some(digest)),
        Some(_) => return Err(Problem::Format),
        None => (text, None),
    };
    // A name has no ':' after its last '/' (a port or an IPv6 host come
    // before it), so one there starts the tag.
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[after_slash..].find(':') {
        Some(i) => (&rest[..after_slash + i], Some(&rest[after_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return Err(Problem::Tag);
    }
    // The first component is the domain whenever both halves fit, as the
    // regexp's leading optional group takes it.
    let (domain, path) = match name.split_once('/') {
        Some((domain, path)) if is_domain(domain) && is_path(path) => (Some(domain), path),
        _ if is_path(name) => (None, name),
        _ => return Err(Problem::Format),
    };
    Ok(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

/// `[\w][\w.-]{0,127}`
pub(super) fn is_tag(tag: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Path components joined by '/'.
fn is_path(path: &str) -> bool {
    path.split('/').all(is_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(part: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = part.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// A host name, an IPv4 address or a bracketed IPv6 address, with an
/// optional `:port`.
pub(super) fn is_domain(domain: &str) -> bool {
    let (host, port) = if let Some(inner) = domain.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return false;
        };
        let ipv6 =
            !address.is_empty() && address.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        if !ipv6 {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    port_ok && (host.is_empty() && domain.starts_with('[') || host.split('.').all(is_host_label))
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_host_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `algorithm:hex` as the grammar allows it:
/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|c| c.is_ascii_alphanumeric())
    };
    hex.len() >= 32
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
        && algorithm.split(['-', '_', '+', '.']).all(component)
}

/// The digests a registry client can verify: sha256 and 64 lowercase hex digits.
fn check_sha256(digest: &str) -> Result<(), Problem> {
    match crate::digest::hex_part(digest) {
        Some(_) => Ok(()),
        None => Err(Problem::Digest),
    }
}

/// 64 hex digits alone: an image ID, which docker refuses as a name.
pub(super) fn is_identifier(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}
