//! Whether this host can run a platform's binaries: natively, or through a
//! `binfmt_misc` handler (qemu-user-static) registered for its machine.

use crate::platform::Platform;
use std::path::Path;

/// Where the kernel lists its binfmt_misc handlers.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The ELF `e_machine` of a Go architecture name.
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "386" => 3,
        "amd64" => 62,
        "arm" => 40,
        "arm64" => 183,
        "ppc64le" | "ppc64" => 21,
        "s390x" => 22,
        "riscv64" => 243,
        "mips64le" | "mips64" | "mipsle" | "mips" => 8,
        "loong64" => 258,
        _ => return None,
    })
}

/// Architectures the host's kernel runs without help.
fn native(host: &str, arch: &str) -> bool {
    host == arch || matches!((host, arch), ("amd64", "386") | ("arm64", "arm"))
}

/// Ok when a step for `platform` can run here; else the error naming the
/// platform, the host and the fix.
pub fn check_runnable(platform: &Platform) -> Result<(), String> {
    check_with(platform, &Platform::host(), Path::new(BINFMT_DIR))
}

fn check_with(platform: &Platform, host: &Platform, binfmt: &Path) -> Result<(), String> {
    let arch = platform.architecture.as_str();
    if platform.os == host.os && native(&host.architecture, arch) {
        return Ok(());
    }
    let wanted = (platform.os == "linux")
        .then(|| elf_machine(arch))
        .flatten();
    if wanted.is_some_and(|m| handler_for(binfmt, m)) {
        return Ok(());
    }
    let (os, host_os, host_arch) = (&platform.os, &host.os, &host.architecture);
    Err(format!(
        "cannot run {os}/{arch} binaries on this {host_os}/{host_arch} host: no binfmt_misc \
         handler for {arch} is registered and enabled; register qemu-user-static's handlers \
         (Debian: apt-get install qemu-user-static binfmt-support; elsewhere: docker run \
         --privileged --rm tonistiigi/binfmt --install {arch}), or build for {host_os}/{host_arch}"
    ))
}

/// Whether an enabled handler in `dir` matches ELF files of `machine`.
fn handler_for(dir: &Path, machine: u16) -> bool {
    let enabled = |path: &Path| {
        std::fs::read_to_string(path).is_ok_and(|t| t.lines().next() == Some("enabled"))
    };
    if !enabled(&dir.join("status")) {
        return false;
    }
    let Ok(listing) = std::fs::read_dir(dir) else {
        return false;
    };
    listing.flatten().any(|entry| {
        let name = entry.file_name();
        if name == "status" || name == "register" {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            return false;
        };
        text.lines().next() == Some("enabled") && magic_machine(&text) == Some(machine)
    })
}

/// The `e_machine` an ELF handler's magic matches (bytes 18-19, in the
/// byte order byte 5 of the magic names).
fn magic_machine(entry: &str) -> Option<u16> {
    let magic = entry.lines().find_map(|l| l.strip_prefix("magic "))?;
    if !magic.starts_with("7f454c46") || magic.len() < 40 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(magic.get(i * 2..i * 2 + 2)?, 16).ok();
    let (lo, hi) = (byte(18)?, byte(19)?);
    Some(match byte(5)? {
        2 => u16::from_be_bytes([lo, hi]),
        _ => u16::from_le_bytes([lo, hi]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn a_foreign_platform_runs_only_with_an_enabled_handler() {
        let host = platform("linux/amd64");
        let dir = tempfile::tempdir().unwrap();
        let arm64 = platform("linux/arm64");
        let err = check_with(&arm64, &host, dir.path()).unwrap_err();
        assert!(
            err.starts_with("cannot run linux/arm64 binaries on this linux/amd64 host"),
            "{err}"
        );
        assert!(err.contains("qemu-user-static"), "{err}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        assert_eq!(check_with(&arm64, &host, dir.path()), Ok(()));
        let disabled = AARCH64.replacen("enabled", "disabled", 1);
        std::fs::write(dir.path().join("qemu-aarch64"), disabled).unwrap();
        assert!(check_with(&arm64, &host, dir.path()).is_err());
        assert!(check_with(&platform("linux/s390x"), &host, dir.path()).is_err());
        assert_eq!(
            check_with(&platform("linux/386"), &host, dir.path()),
            Ok(())
        );
        assert_eq!(check_with(&host, &host, dir.path()), Ok(()));
    }
}
