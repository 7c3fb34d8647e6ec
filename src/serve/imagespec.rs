//! `image.json`: which images a repository wants built. Three shapes are
//! accepted: one object, a list of objects, or `{"images": [...]}`. Each
//! entry is checked on its own, so one bad entry fails that image alone.

use crate::context::untrusted::{excerpt, FileRef, Problem};
use crate::name::Reference;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

pub const FILE_NAME: &str = "image.json";

/// The most of `image.json` that is read.
pub const MAX_BYTES: u64 = 1 << 20;

/// The most images one commit may ask for: each is a build and a push, and
/// the job store keeps a status for each.
pub const MAX_ENTRIES: usize = 100;

/// How errors name the checkout.
const PLACE: &str = "the repository";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read image.json: {0}")]
    Read(Problem),
    #[error("image.json is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("image.json must be an object, a list of objects, or {{\"images\": [...]}}")]
    Shape,
    #[error("image.json lists {0} images; at most {MAX_ENTRIES} are built for one commit")]
    TooMany(usize),
}

/// One entry as written, before any checks (so errors can name it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawEntry {
    pub service_name: String,
    pub version: String,
    pub kind: String,
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    /// Keys image.json does not know, as written (the entry fails on them).
    pub unknown_keys: Vec<String>,
}

/// The keys of an entry.
const KEYS: [&str; 5] = ["service_name", "version", "type", "context", "dockerfile"];

/// An entry that passed every check: what to build and where to push it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEntry {
    pub service_name: String,
    pub version: String,
    pub kind: String,
    pub context_dir: PathBuf,
    /// Relative to the checkout, symlinks resolved.
    pub dockerfile: PathBuf,
    pub target: Reference,
}

/// Reads `image.json` at the repository root into entries: a regular file
/// inside the checkout, of at most 1 MiB.
pub fn read(repo: &Path) -> Result<Vec<RawEntry>, SpecError> {
    let text = FileRef::inside(repo, PLACE, FILE_NAME)
        .read(MAX_BYTES)
        .map_err(|e| SpecError::Read(e.problem))?;
    parse(&text)
}

/// The three shapes, into a flat list of entries.
pub fn parse(text: &[u8]) -> Result<Vec<RawEntry>, SpecError> {
    let v: Value = serde_json::from_slice(text).map_err(SpecError::Json)?;
    let items: Vec<&Value> = match &v {
        Value::Array(list) => list.iter().collect(),
        Value::Object(map) => match map.get("images") {
            Some(Value::Array(list)) if !map.contains_key("service_name") => list.iter().collect(),
            Some(_) if !map.contains_key("service_name") => return Err(SpecError::Shape),
            _ => vec![&v],
        },
        _ => return Err(SpecError::Shape),
    };
    if items.len() > MAX_ENTRIES {
        return Err(SpecError::TooMany(items.len()));
    }
    Ok(items.into_iter().map(raw_entry).collect())
}

/// Strings stay as written; numbers (`"version": 2`) become their text.
fn text_field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn opt_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn raw_entry(v: &Value) -> RawEntry {
    let unknown_keys = v
        .as_object()
        .map(|map| {
            map.keys()
                .filter(|k| !KEYS.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    RawEntry {
        unknown_keys,
        service_name: text_field(v, "service_name"),
        version: text_field(v, "version"),
        kind: text_field(v, "type"),
        context: opt_field(v, "context"),
        dockerfile: opt_field(v, "dockerfile"),
    }
}

/// A relative path that stays inside the repository, lexically.
fn lexically_inside(rel: &str, what: &str) -> Result<(), String> {
    let shown = excerpt(rel);
    if rel.is_empty() || rel.contains('\0') {
        return Err(format!("{what} {shown:?} is empty or invalid"));
    }
    let mut depth: i64 = 0;
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("{what} {shown:?} leaves the repository"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{what} {shown:?} must be relative to the repository root"
                ))
            }
        }
    }
    Ok(())
}

/// A relative path that stays inside the repository, lexically and after
/// following symlinks. Returns the absolute path.
pub fn inside_repo(repo: &Path, rel: &str, what: &str) -> Result<PathBuf, String> {
    lexically_inside(rel, what)?;
    let joined = repo.join(rel);
    // Symlinks inside the checkout may point anywhere: resolve and check again.
    if let (Ok(root), Ok(real)) = (repo.canonicalize(), joined.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(format!(
                "{what} {:?} leaves the repository through a symlink",
                excerpt(rel)
            ));
        }
        return Ok(real);
    }
    Ok(joined)
}

/// Checks an entry against the registry it will be pushed to and the checkout.
pub fn resolve(entry: &RawEntry, repo: &Path, registry: &str) -> Result<CheckedEntry, String> {
    let (name, version) = (excerpt(&entry.service_name), excerpt(&entry.version));
    // A typo in a key would otherwise build with the default silently.
    if let Some(key) = entry.unknown_keys.first() {
        return Err(format!(
            "{FILE_NAME}: unknown key {:?}{}; the keys are {}",
            excerpt(key),
            crate::suggest::did_you_mean(key, &KEYS),
            KEYS.join(", ")
        ));
    }
    if entry.service_name.is_empty() {
        return Err(format!("{FILE_NAME}: missing \"service_name\""));
    }
    if entry.version.is_empty() {
        return Err(format!("{FILE_NAME}: missing \"version\""));
    }
    match entry.kind.to_ascii_lowercase().as_str() {
        "docker" | "oci" => {}
        "" => return Err(format!("{FILE_NAME}: missing \"type\" (Docker or OCI)")),
        _ => {
            return Err(format!(
                "type {:?} is not built by dockless: only Docker and OCI images are",
                excerpt(&entry.kind)
            ))
        }
    }
    let full = format!("{registry}/{}:{}", entry.service_name, entry.version);
    let target = match Reference::parse_tag(&full) {
        Ok(t) if t.repository() == entry.service_name && t.tag() == Some(entry.version.as_str()) => t,
        Ok(_) => {
            return Err(format!(
                "service_name {name:?} and version {version:?} do not form the reference {registry}/{name}:{version}"
            ))
        }
        Err(e) => {
            return Err(format!(
                "service_name {name:?} and version {version:?} do not form a valid reference: {}",
                e.problem
            ))
        }
    };
    let context_dir = match &entry.context {
        Some(c) => inside_repo(repo, c, "context")?,
        None => {
            let own = Path::new(&entry.service_name).join("Dockerfile");
            match FileRef::inside(repo, PLACE, own).resolve() {
                Ok(_) => inside_repo(repo, &entry.service_name, "context")?,
                Err(e) if matches!(e.problem, Problem::Escapes(_)) => {
                    return Err(format!("Dockerfile {}: {}", excerpt(&e.file), e.problem))
                }
                Err(_) => inside_repo(repo, ".", "context")?,
            }
        }
    };
    if !context_dir.is_dir() {
        return Err(format!(
            "context {:?} is not a folder in the repository",
            excerpt(entry.context.as_deref().unwrap_or("."))
        ));
    }
    let dockerfile = dockerfile_in(entry, repo, &context_dir)?;
    Ok(CheckedEntry {
        service_name: entry.service_name.clone(),
        version: entry.version.clone(),
        kind: entry.kind.clone(),
        context_dir,
        dockerfile,
        target,
    })
}

/// The entry's Dockerfile, relative to the context as in docker compose
/// (`Dockerfile` by default): a regular file inside the checkout, whose
/// real path (symlinks resolved) relative to the checkout is returned.
fn dockerfile_in(entry: &RawEntry, repo: &Path, context_dir: &Path) -> Result<PathBuf, String> {
    let rel_ctx = context_dir
        .strip_prefix(repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf()))
        .or_else(|_| context_dir.strip_prefix(repo))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let rel = rel_ctx.join(entry.dockerfile.as_deref().unwrap_or("Dockerfile"));
    lexically_inside(&rel.to_string_lossy(), "dockerfile")?;
    let real = FileRef::inside(repo, PLACE, &rel)
        .resolve()
        .map_err(|e| match e.problem {
            _ if e.is_missing() => format!("no Dockerfile at {}", excerpt(&e.file)),
            _ => format!("Dockerfile {}: {}", excerpt(&e.file), e.problem),
        })?;
    Ok(real.strip_prefix(repo).unwrap_or(&real).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_shapes() {
        let one =
            parse(br#"{"service_name": "api", "version": "1.0.0", "type": "Docker"}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].service_name, "api");
        assert_eq!(one[0].kind, "Docker");
        let list = parse(
            br#"[{"service_name": "a", "version": "1", "type": "OCI"},
                 {"service_name": "b", "version": 2, "type": "AMI", "context": "x", "dockerfile": "D"}]"#,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].version, "2");
        assert_eq!(list[1].context.as_deref(), Some("x"));
        assert_eq!(list[1].dockerfile.as_deref(), Some("D"));
        let wrapped =
            parse(br#"{"images": [{"service_name": "a", "version": "1", "type": "docker"}]}"#)
                .unwrap();
        assert_eq!(wrapped.len(), 1);
        assert!(matches!(parse(b"42"), Err(SpecError::Shape)));
        assert!(matches!(parse(br#"{"images": 3}"#), Err(SpecError::Shape)));
        assert!(matches!(parse(b"{"), Err(SpecError::Json(_))));
        // Entries of the wrong type become empty entries that fail alone.
        let odd = parse(br#"[3, {"service_name": "a"}]"#).unwrap();
        assert_eq!(odd[0], RawEntry::default());
    }

    fn entry(name: &str, version: &str, kind: &str) -> RawEntry {
        RawEntry {
            service_name: name.into(),
            version: version.into(),
            kind: kind.into(),
            ..RawEntry::default()
        }
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("api")).unwrap();
        std::fs::write(d.path().join("api/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir_all(d.path().join("deploy")).unwrap();
        std::fs::write(d.path().join("deploy/web.Dockerfile"), "FROM scratch\n").unwrap();
        d
    }

    #[test]
    fn types_and_default_contexts() {
        let d = repo();
        let root = d.path().canonicalize().unwrap();
        let api = resolve(&entry("api", "1.0.0", "docker"), d.path(), "127.0.0.1:5000").unwrap();
        assert_eq!(api.context_dir, root.join("api"));
        assert_eq!(api.target.to_string(), "127.0.0.1:5000/api:1.0.0");
        let web = resolve(&entry("web", "2", "OCI"), d.path(), "127.0.0.1:5000").unwrap();
        assert_eq!(web.context_dir, root);
        assert_eq!(web.dockerfile, Path::new("Dockerfile"));
        let err = resolve(&entry("vm", "1", "AMI"), d.path(), "r:5000").unwrap_err();
        assert!(err.contains("\"AMI\" is not built by dockless"), "{err}");
        let err = resolve(&entry("vm", "1", ""), d.path(), "r:5000").unwrap_err();
        assert!(err.starts_with("image.json: missing \"type\""), "{err}");
        let typo = &parse(
            br#"{"service_name": "api", "version": "1", "type": "Docker", "dockerfle": "D"}"#,
        )
        .unwrap()[0];
        let err = resolve(typo, d.path(), "r:5000").unwrap_err();
        assert!(
            err.starts_with("image.json: unknown key \"dockerfle\" (did you mean \"dockerfile\"?)"),
            "{err}"
        );
        let mut custom = entry("web", "3", "Docker");
        custom.context = Some("deploy".into());
        custom.dockerfile = Some("web.Dockerfile".into());
        let web = resolve(&custom, d.path(), "r:5000").unwrap();
        assert_eq!(web.dockerfile, Path::new("deploy/web.Dockerfile"));
        custom.dockerfile = Some("missing".into());
        assert!(resolve(&custom, d.path(), "r:5000")
            .unwrap_err()
            .contains("no Dockerfile"));
    }

    #[test]
    fn names_and_versions_are_registry_references() {
        let d = repo();
        for (name, version) in [
            ("API", "1"),
            ("api", "1 0"),
            ("api", ".hidden"),
            ("api:latest", "1"),
            ("", "1"),
            ("api", ""),
            ("../api", "1"),
            ("api@sha256", "1"),
            ("api", "v1/2"),
        ] {
            assert!(
                resolve(&entry(name, version, "Docker"), d.path(), "127.0.0.1:5000").is_err(),
                "{name}:{version}"
            );
        }
        assert!(resolve(
            &entry("team/api", "1.2.3-rc_1", "Docker"),
            d.path(),
            "r:5000"
        )
        .is_ok());
    }

    #[test]
    fn context_paths_stay_inside() {
        let d = repo();
        for bad in ["..", "../x", "/etc", "api/../../x", "a/b/../../.."] {
            assert!(inside_repo(d.path(), bad, "context").is_err(), "{bad}");
        }
        for good in [".", "api", "api/../deploy", "./deploy"] {
            assert!(inside_repo(d.path(), good, "context").is_ok(), "{good}");
        }
        let mut e = entry("web", "1", "Docker");
        e.context = Some("../outside".into());
        assert!(resolve(&e, d.path(), "r:5000")
            .unwrap_err()
            .contains("leaves the repository"));
        e.context = Some("api".into());
        e.dockerfile = Some("../../Dockerfile".into());
        assert!(resolve(&e, d.path(), "r:5000")
            .unwrap_err()
            .contains("leaves the repository"));
        // A symlink pointing out of the checkout is caught after resolution.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("escape")).unwrap();
        let err = inside_repo(d.path(), "escape", "context").unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }

    #[test]
    fn files_are_read_inside_the_checkout_only() {
        let d = repo();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "TOPSECRET value\n").unwrap();
        // The default Dockerfile, the service's own one and an explicit one.
        for (df, name, dockerfile) in [
            ("Dockerfile", "web", None),
            ("api/Dockerfile", "api", None),
            ("deploy/web.Dockerfile", "web", Some("web.Dockerfile")),
        ] {
            std::fs::remove_file(d.path().join(df)).unwrap();
            std::os::unix::fs::symlink(&secret, d.path().join(df)).unwrap();
            let mut e = entry(name, "1", "Docker");
            if let Some(f) = dockerfile {
                e.context = Some("deploy".into());
                e.dockerfile = Some(f.into());
            }
            let err = resolve(&e, d.path(), "r:5000").unwrap_err();
            assert!(err.contains("leads out of the repository"), "{df}: {err}");
            std::fs::remove_file(d.path().join(df)).unwrap();
            std::fs::write(d.path().join(df), "FROM scratch\n").unwrap();
        }
        // A Dockerfile symlinked inside the checkout is its target.
        std::fs::remove_file(d.path().join("Dockerfile")).unwrap();
        std::os::unix::fs::symlink("deploy/web.Dockerfile", d.path().join("Dockerfile")).unwrap();
        let web = resolve(&entry("web", "1", "Docker"), d.path(), "r:5000").unwrap();
        assert_eq!(web.dockerfile, Path::new("deploy/web.Dockerfile"));

        for (target, problem) in [
            (secret.as_path(), "leads out of the repository"),
            (Path::new("/dev/zero"), "leads out of the repository"),
            (Path::new("deploy"), "not a regular file"),
        ] {
            let _ = std::fs::remove_file(d.path().join(FILE_NAME));
            std::os::unix::fs::symlink(target, d.path().join(FILE_NAME)).unwrap();
            let err = read(d.path()).unwrap_err().to_string();
            assert!(err.starts_with("cannot read image.json: "), "{err}");
            assert!(err.contains(problem), "{err}");
        }
        std::fs::remove_file(d.path().join(FILE_NAME)).unwrap();
        std::fs::write(d.path().join(FILE_NAME), vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read(d.path()).unwrap_err().to_string(),
            "cannot read image.json: larger than 1 MiB, the most that is read"
        );
    }

    #[test]
    fn at_most_a_hundred_entries() {
        let list = |n: usize| {
            let one = r#"{"service_name": "a", "version": "1", "type": "OCI"}"#;
            format!("[{}]", vec![one; n].join(","))
        };
        assert_eq!(parse(list(MAX_ENTRIES).as_bytes()).unwrap().len(), 100);
        let err = parse(list(4000).as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "image.json lists 4000 images; at most 100 are built for one commit"
        );
    }
}
