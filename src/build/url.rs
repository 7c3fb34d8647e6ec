//! `ADD <url>`: which sources BuildKit takes for URLs or git repositories
//! (`frontend/dockerfile/dockerfile2llb/convert_copy.go` `isHTTPSource`,
//! `dfgitutil.ParseGitRef`), the name a download gets, `--checksum`, and the
//! download itself (BuildKit's `source/http/source.go`): over the registry
//! client's TLS settings, capped in size, hashed on the way.

use super::source::Source;
use super::{BuildError, Builder};
use crate::dockerfile::CopyArgs;
use crate::layer::FileSource;
use crate::remote::tls;
use crate::rootfs::{Node, NodeKind};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

impl Builder<'_> {
    /// `ADD --checksum`, expanded and checked as BuildKit's `dispatchCopy`
    /// does: one source (heredocs aside), a URL or git one, a valid digest.
    pub(super) fn checksum(
        &self,
        line: usize,
        args: &CopyArgs,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, BuildError> {
        let Some(raw) = &args.checksum else {
            return Ok(None);
        };
        let text = self.expand(line, raw, lookup)?;
        let is_heredoc = |s: &String| args.heredocs.iter().any(|h| &h.name == s);
        let paths: Vec<&String> = args.sources.iter().filter(|s| !is_heredoc(s)).collect();
        let [path] = paths.as_slice() else {
            return Err(self.fail(line, "checksum can't be specified for multiple sources"));
        };
        if remote_kind(&self.expand(line, path, lookup)?).is_none() {
            return Err(self.fail(line, "checksum requires HTTP(S) or Git sources"));
        }
        check_checksum(&text)
            .map_err(|e| self.fail(line, format!("ADD --checksum={text}: {e}")))?;
        Ok(Some(text))
    }

    /// A URL or git source: downloaded for ADD, refused otherwise.
    pub(super) fn remote_source(
        &mut self,
        line: usize,
        is_add: bool,
        kind: Remote,
        src: &str,
        checksum: Option<&str>,
    ) -> Result<Source, BuildError> {
        match (kind, is_add) {
            (Remote::Git, false) => Err(self.fail(line, "source can't be a git ref for COPY")),
            (Remote::Http, false) => Err(self.fail(line, "source can't be a URL for COPY")),
            (Remote::Git, true) => Err(self.fail(
                line,
                format!("ADD {src}: adding a git repository is not supported yet"),
            )),
            (Remote::Http, true) => self.url_source(line, src, checksum),
        }
    }

    /// A download as a file source: mode 0600, root's, named after the URL,
    /// its mtime from `Last-Modified` clamped to the build's timestamp.
    /// Remote archives are not extracted, as in BuildKit.
    fn url_source(
        &mut self,
        line: usize,
        src: &str,
        checksum: Option<&str>,
    ) -> Result<Source, BuildError> {
        // The URL itself may hold credentials: not repeated in this error.
        let url = Url::parse(src)
            .map_err(|e| self.fail(line, format!("ADD: the source is not a valid URL: {e}")))?;
        let path = self.staging_dir()?.join("download");
        let opts = self.opts;
        let fetched = self
            .bases
            .block_on(download(
                &url,
                &path,
                &opts.remote.ca_certs,
                opts.add_url_max_size,
            ))
            .map_err(|e| self.fail_because(line, format!("ADD {}: {e}", shown(&url)), e))?
            .map_err(|e| self.fail_because(line, format!("ADD {e}"), e))?;
        if let Some(want) = checksum {
            if fetched.digest != want {
                let got = &fetched.digest;
                let message = format!(
                    "digest mismatch for {}: {got} (expected: {want})",
                    shown(&url)
                );
                return Err(self.fail(line, message));
            }
        }
        let mtime = fetched
            .last_modified
            .unwrap_or(0)
            .min(opts.source_date_epoch);
        if mtime != opts.source_date_epoch {
            self.url_mtimes.insert(path.clone(), mtime);
        }
        tracing::info!(line, url = %shown(&url), size = fetched.size, digest = %fetched.digest, "downloaded");
        Ok(Source::Tree {
            name: file_name(&url),
            root: Node {
                kind: NodeKind::File {
                    source: FileSource::Path(path),
                    size: fetched.size,
                    link_key: None,
                },
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
            children: Vec::new(),
        })
    }
}

/// A source that is not a path in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Remote {
    Http,
    Git,
}

/// BuildKit's reading of a source: a git repository (`git@host:repo`,
/// `git://`, `ssh://`, or http(s) whose path ends in `.git`), else a URL
/// when it starts with `http://` or `https://`, else a context path.
pub(super) fn remote_kind(src: &str) -> Option<Remote> {
    if is_git(src) {
        Some(Remote::Git)
    } else if src.starts_with("http://") || src.starts_with("https://") {
        Some(Remote::Http)
    } else {
        None
    }
}

/// util/gitutil `ParseURL` (a `scheme://` prefix in any case) and
/// util/sshutil's scp-style form.
fn is_git(src: &str) -> bool {
    let scheme_end = src
        .find("://")
        .filter(|&i| i > 0 && src[..i].bytes().all(|b| b.is_ascii_alphanumeric()));
    if let Some(i) = scheme_end {
        return match src[..i].to_ascii_lowercase().as_str() {
            "git" | "ssh" => true,
            "http" | "https" => Url::parse(src).is_ok_and(|u| u.path().ends_with(".git")),
            _ => false,
        };
    }
    // `user@host:path`, the scp-like form.
    let Some((user, rest)) = src.split_once('@') else {
        return false;
    };
    let Some((host, _)) = rest.split_once(':') else {
        return false;
    };
    let word = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    word(user, b"-_") && word(host, b"-.")
}

/// The file name of a download: the URL path's last component, decoded,
/// else `__unnamed__` (dispatchCopy), made safe as BuildKit's
/// `pathutil.SafeFileName` does (`download` for `..` or control characters).
pub(super) fn file_name(url: &Url) -> String {
    let path = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name = if base.is_empty() { "__unnamed__" } else { base };
    let name = name.trim();
    let name = name.rsplit('/').next().unwrap_or(name);
    if matches!(name, "" | "." | "..") || name.chars().any(char::is_control) {
        "download".to_string()
    } else {
        name.to_string()
    }
}

/// A URL as errors show it: no user info, query or fragment, which may
/// carry secrets.
pub(super) fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Checks `--checksum` as go-digest's `Digest.Validate` does (BuildKit
/// `digest.Parse`); algorithms are sha256, sha384 and sha512.
pub(super) fn check_checksum(text: &str) -> Result<(), &'static str> {
    const FORMAT: &str = "invalid checksum digest format";
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return Err(FORMAT);
    };
    if algorithm.is_empty() || encoded.is_empty() {
        return Err(FORMAT);
    }
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // DigestRegexpAnchored: an algorithm of lower-case words, an encoded part.
            let algo_ok = algorithm.split(['.', '+', '_', '-']).all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            let encoded_ok = encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
            return Err(if algo_ok && encoded_ok {
                "unsupported digest algorithm"
            } else {
                FORMAT
            });
        }
    };
    if encoded.len() != hex_len {
        return Err("invalid checksum digest length");
    }
    if !encoded
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(FORMAT);
    }
    Ok(())
}

/// A finished download.
pub(super) struct Download {
    pub(super) size: u64,
    /// `sha256:<hex>` of the content.
    pub(super) digest: String,
    /// From `Last-Modified`, seconds since the epoch.
    pub(super) last_modified: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DownloadError {
    #[error("{0}")]
    Setup(String),
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: invalid response status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than the limit of {limit} bytes for a download (--add-url-max-size, or add_url_max_size for dockless serve)")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: plain HTTP would send the URL's credentials in clear; use https")]
    CredentialsInClear { url: String },
    #[error("writing the download {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Connection and stall limits, as the registry client's.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Downloads `url` to `dest` as BuildKit's HTTP source does: any 2xx or 3xx
/// status but 304 is content, redirects are followed (10 at most; reqwest
/// drops credentials on one to another scheme, host or port), and a
/// gzip `Content-Encoding` is decoded as Go's client does. At most
/// `max_bytes` are kept, before and after decoding.
pub(super) async fn download(
    url: &Url,
    dest: &Path,
    ca_certs: &[PathBuf],
    max_bytes: u64,
) -> Result<Download, DownloadError> {
    let shown = shown(url);
    let has_credentials = !url.username().is_empty() || url.password().is_some();
    if has_credentials && url.scheme() == "http" {
        return Err(DownloadError::CredentialsInClear { url: shown });
    }
    let tls = tls::client_config(ca_certs).map_err(|e| DownloadError::Setup(e.to_string()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("dockless/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| DownloadError::Setup(format!("building the HTTP client: {e}")))?;
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let mut request = client
        .get(bare)
        .header(reqwest::header::ACCEPT_ENCODING, "gzip");
    if has_credentials {
        let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy();
        let password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        request = request.basic_auth(user, password);
    }
    let failed = |e: reqwest::Error| DownloadError::Request {
        url: shown.clone(),
        reason: describe(&e),
    };
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status().as_u16();
    if !(200..400).contains(&status) || status == 304 {
        return Err(DownloadError::Status { url: shown, status });
    }
    let too_large = || DownloadError::TooLarge {
        url: shown.clone(),
        limit: max_bytes,
    };
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let last_modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let gzipped = response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Write { path, source }
    };
    let raw_path = if gzipped {
        dest.with_extension("gz")
    } else {
        dest.to_path_buf()
    };
    let mut raw = std::fs::File::create(&raw_path).map_err(write_err(&raw_path))?;
    let mut written: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(too_large());
        }
        raw.write_all(&chunk).map_err(write_err(&raw_path))?;
    }
    drop(raw);
    if gzipped {
        let file = std::fs::File::open(&raw_path).map_err(write_err(&raw_path))?;
        let decoded = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        let mut out = std::fs::File::create(dest).map_err(write_err(dest))?;
        let copied =
            std::io::copy(&mut decoded.take(max_bytes + 1), &mut out).map_err(write_err(dest))?;
        if copied > max_bytes {
            return Err(too_large());
        }
        let _ = std::fs::remove_file(&raw_path);
    }
    let (size, hex) = hash_file(dest).map_err(write_err(dest))?;
    Ok(Download {
        size,
        digest: format!("sha256:{hex}"),
        last_modified,
    })
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// A failed request in words: the TLS problem when there is one (as the
/// registry client says it), else the error's causes, never the URL.
fn describe(e: &reqwest::Error) -> String {
    tls::tls_reason(e).unwrap_or_else(|| crate::remote::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BuildKit: `dfgitutil.ParseGitRef` and `isHTTPSource`.
    #[test]
    fn sources_are_read_as_buildkit_reads_them() {
        for (src, kind) in [
            ("https://h/file.txt", Some(Remote::Http)),
            ("http://h/", Some(Remote::Http)),
            ("https://h/repo.git", Some(Remote::Git)),
            ("https://h/repo.git#main:sub", Some(Remote::Git)),
            ("HTTPS://h/repo.git", Some(Remote::Git)),
            ("git@h:r.git", Some(Remote::Git)),
            ("git://h/r", Some(Remote::Git)),
            ("ssh://git@h/r", Some(Remote::Git)),
            ("github.com/o/r", None),
            ("HTTPS://h/file", None),
            ("ftp://h/file", None),
            ("a@b", None),
            ("./x", None),
        ] {
            assert_eq!(remote_kind(src), kind, "{src}");
        }
    }

    #[test]
    fn names_come_from_the_url_path() {
        for (url, name) in [
            ("https://h/dir/file.txt?q=1#frag", "file.txt"),
            ("https://h/a%20b.txt", "a b.txt"),
            ("https://h/dir/", "dir"),
            ("https://h/", "__unnamed__"),
            ("https://h", "__unnamed__"),
            ("https://h/%20", "download"),
            ("https://h/x%0Ay", "download"),
        ] {
            assert_eq!(file_name(&Url::parse(url).unwrap()), name, "{url}");
        }
    }

    #[test]
    fn shown_urls_keep_no_secrets() {
        let url = Url::parse("https://user:pw@h:8443/p/f.txt?token=s#x").unwrap();
        assert_eq!(shown(&url), "https://h:8443/p/f.txt");
    }

    /// go-digest `Digest.Validate`, as BuildKit's `digest.Parse` uses it.
    #[test]
    fn checksums_are_checked_as_go_digest_does() {
        let hex = "a".repeat(64);
        assert_eq!(check_checksum(&format!("sha256:{hex}")), Ok(()));
        assert_eq!(
            check_checksum(&format!("sha512:{}", "0".repeat(128))),
            Ok(())
        );
        for (text, err) in [
            ("abc", "invalid checksum digest format"),
            ("sha256:", "invalid checksum digest format"),
            (":abc", "invalid checksum digest format"),
            ("md5:x", "unsupported digest algorithm"),
            ("MD5:x", "invalid checksum digest format"),
            ("sha256:abc", "invalid checksum digest length"),
        ] {
            assert_eq!(check_checksum(text), Err(err), "{text}");
        }
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(
            check_checksum(&upper),
            Err("invalid checksum digest format")
        );
    }
}
