//! Target platforms in OCI's os/architecture/variant terms.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"
    )]
    Invalid(String),
    #[error("platform {0:?}: dockless builds Linux images only, not {1:?}; use linux/ARCH")]
    Os(String, String),
}

impl Platform {
    /// The platform this binary runs on, named as Go (and so every registry) names it.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Parses `os/arch[/variant]` and normalises it as containerd's
    /// `platforms` package does (`aarch64` is `arm64`, `x86_64` is `amd64`,
    /// `arm` gets its default variant `v7`), so the index and the configs
    /// name platforms as registries and runtimes expect. Only Linux images
    /// can be built: other systems' layers and configs differ.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let valid = |s: &&str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError::Invalid(text.into()));
        }
        let os = parts[0].to_ascii_lowercase();
        if os != "linux" {
            return Err(PlatformError::Os(text.into(), os));
        }
        let (architecture, variant) = normalize_arch(
            &parts[1].to_ascii_lowercase(),
            parts.get(2).map(|v| v.to_ascii_lowercase()),
        );
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

/// containerd's `normalizeArch`: the architecture's canonical name and its
/// variant (`v` added to a bare number; the default variant dropped where
/// containerd drops it, added for 32-bit arm).
fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let v = |n: &str| Some(n.to_string());
    let numbered = variant.map(|v| match v.parse::<u32>() {
        Ok(_) => format!("v{v}"),
        Err(_) => v,
    });
    let (arch, variant) = match arch {
        "i386" | "i686" => ("386", None),
        "x86_64" | "x86-64" | "amd64" => match numbered.as_deref() {
            Some("v1") => ("amd64", None),
            _ => ("amd64", numbered),
        },
        "aarch64" | "arm64" => match numbered.as_deref() {
            Some("v8") | Some("v8.0") => ("arm64", None),
            _ => ("arm64", numbered),
        },
        "armhf" => ("arm", v("v7")),
        "armel" => ("arm", v("v6")),
        "arm" => ("arm", numbered.or(v("v7"))),
        other => return (other.to_string(), numbered),
    };
    (arch.to_string(), variant)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = Platform::parse("linux/arm/v6").unwrap();
        assert_eq!(p.architecture, "arm");
        assert_eq!(p.to_string(), "linux/arm/v6");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn normalises_as_containerd() {
        for (given, wanted) in [
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
        ] {
            assert_eq!(
                Platform::parse(given).unwrap().to_string(),
                wanted,
                "{given}"
            );
        }
        let e = Platform::parse("windows/amd64").unwrap_err().to_string();
        assert!(e.contains("Linux images only"), "{e}");
    }

    #[test]
    fn host_is_linux() {
        assert_eq!(Platform::host().os, "linux");
    }
}
