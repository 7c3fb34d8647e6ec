//! The build information Go (1.18 and later) embeds in every binary: the Go
//! version and the modules it was built from, as `go version -m` prints them.
//!
//! Hand-written (the format is Go's `debug/buildinfo`): no maintained crate
//! reads it. The ELF section is found with `object`.

use super::package::{Ecosystem, Found};
use object::{Object as _, ObjectSection as _};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The header: magic, pointer size, flags, then 16 bytes of pointers or padding.
const HEADER_LEN: usize = 32;
/// Flag bit: the version and module strings follow the header inline (Go 1.18+).
const FLAG_INLINE: u8 = 2;
/// How far from the section start the header may be (Go searches 64 KiB).
const SEARCH_LEN: usize = 64 << 10;

/// The Go packages of a binary: the standard library at the toolchain's
/// version, the main module and every dependency; empty for anything else.
pub fn scan_binary(elf: &[u8]) -> Vec<Found> {
    let Some((go_version, modinfo)) = build_info(elf) else {
        return Vec::new();
    };
    let mut found = vec![Found::new(
        Ecosystem::Golang,
        "stdlib",
        go_version.trim_start_matches("go"),
    )];
    found.extend(modules(&modinfo));
    found
}

/// (Go version, module info) of an ELF binary built by Go 1.18 or later.
fn build_info(elf: &[u8]) -> Option<(String, String)> {
    let file = object::File::parse(elf).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    let (offset, size) = section.file_range()?;
    let start = usize::try_from(offset).ok()?;
    let end = start
        .checked_add(usize::try_from(size).ok()?)?
        .min(elf.len());
    let data = elf.get(start..end)?;
    let at = (0..data.len().min(SEARCH_LEN))
        .step_by(16)
        .find(|&i| data[i..].starts_with(MAGIC))?;
    let header = data.get(at..at + HEADER_LEN)?;
    if header[15] & FLAG_INLINE == 0 {
        tracing::debug!("a Go binary older than 1.18: its build info is not read");
        return None;
    }
    let mut rest = &data[at + HEADER_LEN..];
    let version = String::from_utf8_lossy(&read_string(&mut rest)?).into_owned();
    // Bytes until the sentinels are gone: they are not UTF-8.
    let modinfo = read_string(&mut rest)?;
    Some((version, strip_sentinels(&modinfo)))
}

/// A uvarint-length-prefixed string.
fn read_string(data: &mut &[u8]) -> Option<Vec<u8>> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    let (bytes, rest) = (data.get(..len)?, data.get(len..)?);
    *data = rest;
    Some(bytes.to_vec())
}

/// Module info is wrapped in 16 sentinel bytes on each side; without them
/// (a GOPATH build) there is none.
fn strip_sentinels(bytes: &[u8]) -> String {
    if bytes.len() >= 33 && bytes[bytes.len() - 17] == b'\n' {
        String::from_utf8_lossy(&bytes[16..bytes.len() - 16]).into_owned()
    } else {
        String::new()
    }
}

/// `mod` (the main module), `dep` lines, and `=>` replacing the dep before it.
fn modules(modinfo: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    for line in modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["mod" | "dep", path, version, ..] => {
                let version = if *version == "(devel)" { "" } else { version };
                out.push(module(path, version));
            }
            ["=>", path, version, ..] if !is_local(path, version) => {
                // A module replaced by another module; a local folder
                // (no version, or Go 1.19's "(devel)") leaves the original
                // name and version.
                if let Some(last) = out.last_mut() {
                    *last = module(path, version);
                }
            }
            _ => {}
        }
    }
    out
}

fn is_local(path: &str, version: &str) -> bool {
    version.is_empty() || version == "(devel)" || path.starts_with(['.', '/'])
}

fn module(path: &str, version: &str) -> Found {
    let mut found = Found::new(Ecosystem::Golang, path, version);
    if let Some((ns, name)) = path.rsplit_once('/') {
        found.namespace = Some(ns.to_string());
        found.name = name.to_string();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lines() {
        let info = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
            dep\tgolang.org/x/text\tv0.14.0\th1:abc=\n\
            dep\texample.com/dep\tv1.0.0\n=>\t./dep\t\t\n\
            dep\texample.com/other\tv2.0.0\n=>\t../other\t(devel)\t\n\
            dep\tgopkg.in/yaml.v3\tv3.0.0\n=>\tgopkg.in/yaml.v3\tv3.0.1\th1:x=\n\
            build\t-compiler=gc\n";
        let got: Vec<String> = modules(info)
            .iter()
            .map(|f| format!("{}@{}", f.full_name(), f.version))
            .collect();
        assert_eq!(
            got,
            [
                "example.com/app@",
                "golang.org/x/text@v0.14.0",
                "example.com/dep@v1.0.0",
                "example.com/other@v2.0.0",
                "gopkg.in/yaml.v3@v3.0.1"
            ]
        );
        assert_eq!(
            module("golang.org/x/text", "v0.14.0").purl(None).unwrap(),
            "pkg:golang/golang.org/x/text@v0.14.0"
        );
    }

    #[test]
    fn sentinels_and_strings() {
        let inner = "path\tx\nmod\tx\tv1\t\n";
        // Go's sentinels are binary, not UTF-8.
        let mut wrapped = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        wrapped.extend_from_slice(inner.as_bytes());
        wrapped.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        assert_eq!(strip_sentinels(&wrapped), inner);
        assert_eq!(strip_sentinels(b"path\tx\n"), "");
        let mut data: &[u8] = b"\x03go1rest";
        assert_eq!(read_string(&mut data).as_deref(), Some(&b"go1"[..]));
        assert_eq!(data, b"rest");
        let mut short: &[u8] = b"\x09abc";
        assert!(read_string(&mut short).is_none());
        assert!(scan_binary(b"not an elf").is_empty());
    }
}
