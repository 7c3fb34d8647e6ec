//! Debian's package database, `/var/lib/dpkg/status` (deb822 stanzas, see
//! deb-control(5)), and distroless's `status.d/` (one stanza per file),
//! and Alpine's `/lib/apk/db/installed` (apk-package(5) single-letter keys).

use super::package::{Ecosystem, Found};

/// The installed packages of a dpkg status file. `status.d` files have no
/// `Status` field: absent means installed.
pub fn parse_status(text: &str) -> Vec<Found> {
    stanzas(text)
        .filter_map(|fields| {
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let status = get("Status").unwrap_or("install ok installed");
            if !is_installed(status) {
                return None;
            }
            let mut found = Found::new(Ecosystem::Deb, get("Package")?, get("Version")?);
            found.arch = get("Architecture").map(String::from);
            Some(found)
        })
        .collect()
}

/// The third word of `Status` is the state; these ones leave the package's
/// files on disk and in use.
fn is_installed(status: &str) -> bool {
    matches!(
        status.split_whitespace().nth(2),
        Some("installed" | "triggers-pending" | "triggers-awaited")
    )
}

/// deb822 stanzas as (field, value) lists: blank lines separate stanzas,
/// lines starting with a space or tab continue the previous field (only
/// its first line is kept: the fields read here are one-liners).
fn stanzas(text: &str) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    text.split("\n\n").filter_map(|block| {
        let fields: Vec<(String, String)> = block
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        (!fields.is_empty()).then_some(fields)
    })
}

/// The packages of an apk installed database: `P:` name, `V:` version,
/// `A:` architecture, stanzas separated by blank lines.
pub fn parse_apk_installed(text: &str) -> Vec<Found> {
    text.split("\n\n")
        .filter_map(|block| {
            let get = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let mut found = Found::new(Ecosystem::Apk, get("P")?, get("V")?);
            found.arch = get("A").map(String::from);
            Some(found)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_installed_packages() {
        let text = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\n\
            Source: bash (5.2.15-2)\nVersion: 5.2.15-2+b2\nDescription: GNU shell\n multi\n line\n\n\
            Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
            package: tzdata\nstatus: install ok triggers-pending\nversion: 2024a-0+deb12u1\narchitecture: all\n";
        let found = parse_status(text);
        let names: Vec<_> = found
            .iter()
            .map(|f| (f.name.as_str(), f.version.as_str(), f.arch.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("bash", "5.2.15-2+b2", Some("amd64")),
                ("tzdata", "2024a-0+deb12u1", Some("all"))
            ]
        );
        // A distroless status.d file has no Status field.
        assert_eq!(
            parse_status("Package: base-files\nVersion: 12.4\n").len(),
            1
        );
        assert!(parse_status("garbage\n\n\n").is_empty());
    }

    #[test]
    fn apk_database() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\n\n\
            P:busybox\nV:1.36.1-r15\nA:x86_64\n\nP:noversion\n";
        let found = parse_apk_installed(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].name, "busybox");
        assert_eq!(found[1].version, "1.36.1-r15");
        assert_eq!(found[0].arch.as_deref(), Some("x86_64"));
    }
}
