//! The same run through virtme-ng, for developers who already use it:
//! `vng --run KERNEL --exec "uffdtest run ..."` on the host's own root.
//!
//! vng needs more of the host than our own initramfs does; each missing
//! piece is named before the boot (see `shared/reference/vng.md`): `vng` and
//! `virtme-run` on PATH, `busybox` (for vng's initramfs), `depmod` (Debian's
//! kmod), and a way to share the root: the Rust `virtiofsd`, or a kernel
//! with 9p built in (`--force-9p`).
//!
//! vng's exit code is not the guest command's: without udev in the guest it
//! falls back to the console for the script and exits 255 even when the
//! command succeeded. So the KTAP decides; cases it lacks count as crashed.

use super::boot::{self, Accel};
use super::kconfig;
use std::path::Path;

/// Where virtme-ng looks for the Rust virtiofsd besides PATH. It ignores
/// the old C daemon QEMU 7.2 ships in /usr/lib/qemu.
const VIRTIOFSD_PATHS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"];

/// How the guest gets the host's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootShare {
    VirtioFs,
    NineP,
}

/// What is missing for vng, each with its fix; empty when it can run.
pub fn missing_pieces(kernel_config: Option<&Path>) -> Result<RootShare, Vec<String>> {
    let mut missing = Vec::new();
    if boot::which("vng").is_none() {
        missing.push("vng (virtme-ng) is not on PATH: pip install virtme-ng (in a venv, put its bin/ on PATH)".into());
    } else if boot::which("virtme-run").is_none() {
        missing.push("virtme-run is not on PATH: vng starts it through the shell; add the venv's bin/ to PATH".into());
    }
    if boot::which("busybox").is_none() {
        missing.push("busybox is not on PATH: vng builds its initramfs with it; apt-get install busybox-static".into());
    }
    if boot::which("depmod").is_none() {
        missing.push(
            "depmod is not on PATH: vng runs it even for a bzImage; apt-get install kmod, keep /usr/sbin on PATH"
                .into(),
        );
    }
    if boot::which(boot::QEMU).is_none() {
        missing.push(format!(
            "{} is not on PATH: apt-get install qemu-system-x86",
            boot::QEMU
        ));
    }
    let virtiofsd = boot::which("virtiofsd").is_some() || VIRTIOFSD_PATHS.iter().any(|p| Path::new(p).is_file());
    let share = if virtiofsd {
        RootShare::VirtioFs
    } else if kernel_config.is_some_and(has_9p) {
        RootShare::NineP
    } else {
        missing.push(
            "no virtiofsd for vng to share the root (Debian 12 has no package, and vng ignores QEMU's old C daemon): \
             apt-get install libseccomp-dev libcap-ng-dev && cargo install virtiofsd; or boot a kernel with 9p built \
             in (CONFIG_9P_FS=y, CONFIG_NET_9P_VIRTIO=y) given as a build tree"
                .into(),
        );
        RootShare::VirtioFs
    };
    if missing.is_empty() { Ok(share) } else { Err(missing) }
}

fn has_9p(config: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(config) else {
        return false;
    };
    let c = kconfig::parse_config(&text);
    ["CONFIG_9P_FS", "CONFIG_NET_9P_VIRTIO"]
        .iter()
        .all(|k| c.get(*k).map(String::as_str) == Some("y"))
}

/// A word for `sh -c`, single-quoted.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The vng command line.
pub fn vng_args(
    kernel: &Path,
    accel: Accel,
    share: &RootShare,
    memory_mib: u32,
    cpus: u32,
    append: &[String],
    exec: &str,
) -> Vec<String> {
    let mut v: Vec<String> = vec!["--run".into(), kernel.display().to_string()];
    if accel == Accel::Tcg {
        v.push("--disable-kvm".into());
        // The same reason as in boot::kernel_params: a slow TCG guest can
        // fail the IO-APIC timer check and panic before init.
        v.extend(["--append".into(), "no_timer_check".into()]);
    }
    if *share == RootShare::NineP {
        v.push("--force-9p".into());
    }
    v.extend([
        "--memory".into(),
        format!("{memory_mib}M"),
        "--cpus".into(),
        cpus.to_string(),
    ]);
    for p in append {
        v.extend(["--append".into(), p.clone()]);
    }
    v.extend(["--exec".into(), exec.to_string()]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
