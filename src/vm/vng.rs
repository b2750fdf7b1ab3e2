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

use super::boot::{self, Accel, AccelChoice};
use super::error::VmError;
use super::kconfig;
use super::options::VmOptions;
use crate::runner::{Report, discover};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The `uffdtest run` command the guest executes: the host's selection and
/// the guest's case settings, as `uffdtest run` flags.
pub fn guest_command(o: &VmOptions, exe: &Path, manifest: &Path) -> String {
    let g = &o.guest;
    let mut w: Vec<String> = vec![exe.display().to_string(), "run".into(), "--manifest".into()];
    w.push(manifest.display().to_string());
    w.extend(["--announce-kmsg".into(), "--jobs".into(), g.jobs.to_string()]);
    w.extend([
        "--timeout".into(),
        g.case_timeout_secs.to_string(),
        "--hugepages".into(),
        g.hugepages.to_string(),
    ]);
    for f in &g.filters {
        w.extend(["--filter".into(), f.clone()]);
    }
    for s in &g.skip {
        w.extend(["--skip".into(), s.clone()]);
    }
    if !g.mem.is_empty() {
        w.extend(["--mem".into(), g.mem.join(",")]);
    }
    if !g.ioctl.is_empty() {
        w.extend(["--ioctl".into(), g.ioctl.join(",")]);
    }
    if !g.first.is_empty() {
        w.extend(["--first".into(), g.first.join(",")]);
    }
    if let Some((k, n)) = g.shard {
        w.extend(["--shard".into(), format!("{k}/{n}")]);
    }
    if g.run_ignored {
        w.push("--run-ignored".into());
    }
    if g.repeat > 1 {
        w.extend(["--repeat".into(), g.repeat.to_string()]);
    }
    if let Some(n) = g.max_fail {
        w.extend(["--max-fail".into(), n.to_string()]);
    }
    w.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ")
}

/// `uffdtest vm --runner vng`: the suite through vng, its KTAP relayed to
/// stdout, then the report files. Err when vng could not run the suite.
pub fn run_and_report(o: &VmOptions) -> Result<Report, VmError> {
    let kernel = boot::resolve_kernel(&o.kernel)?;
    let share = missing_pieces(kernel.config.as_deref()).map_err(VmError::VngMissing)?;
    let manifest: PathBuf = o.manifest.clone().unwrap_or_else(discover::default_manifest);
    if o.build_tests {
        let m = discover::build_manifest(&[]).map_err(VmError::runner)?;
        m.write(&manifest).map_err(VmError::runner)?;
    }
    if !manifest.is_file() {
        return Err(VmError::NoManifest(manifest));
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("uffdtest"));
    // KVM that cannot run a standard guest (see boot::kvm_failed) is only
    // found by booting; vng gives no early sign, so auto means TCG unless forced.
    let accel = match o.accel {
        AccelChoice::Kvm => Accel::Kvm,
        _ => Accel::Tcg,
    };
    // The guest writes KTAP into a directory vng shares read-write (its
    // other host paths are overlays whose writes the host never sees), and
    // the host follows the file: vng forwards the command's stdout only when
    // the guest has udev, and mixes it with console noise otherwise.
    let dir = std::env::temp_dir().join(format!("uffdtest-vng-{}", std::process::id()));
    let ktap_file = dir.join("ktap.txt");
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&ktap_file, ""))
        .map_err(VmError::io(format!("cannot create {}", ktap_file.display())))?;
    let exec = format!(
        "{} >{} 2>/dev/null",
        guest_command(o, &exe, &manifest),
        quote(&ktap_file.display().to_string())
    );
    let mut args = vng_args(&kernel.image, accel, &share, o.memory_mib, o.cpus, &o.append, &exec);
    args.splice(0..0, ["--rwdir".to_string(), dir.display().to_string()]);
    let mut child = Command::new("vng")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(VmError::io("cannot start vng"))?;
    let (ktap, status, silent) = follow_ktap(&mut child, &ktap_file, o.timeout);
    let _ = std::fs::remove_dir_all(&dir);
    if silent {
        eprintln!(
            "uffdtest: the vng guest wrote no KTAP for {} s and was killed",
            o.timeout.as_secs()
        );
    }
    let report = crate::runner::parse_ktap(&ktap).map_err(|_| VmError::VngNoKtap(status))?;
    o.reports
        .with_kernel(&o.kernel.display().to_string(), "uffdtest vm --runner vng")
        .write(&report, true);
    if status != 0 {
        eprintln!("uffdtest: vng exited {status}; the verdict comes from the KTAP (cases it lacks count as crashed)");
    }
    Ok(report)
}

/// Relays the lines the guest appends to `file` until `child` exits, or
/// kills it after `timeout` without a new line. Returns the text, the exit
/// code (255 when killed) and whether it went silent.
fn follow_ktap(child: &mut Child, file: &Path, timeout: Duration) -> (String, i32, bool) {
    let mut f = std::fs::File::open(file).ok();
    let mut all = String::new();
    let mut pending = Vec::new();
    let mut last = Instant::now();
    let mut out = std::io::stdout();
    loop {
        let exited = child.try_wait().ok().flatten();
        let mut buf = [0u8; 8192];
        while let Some(n) = f.as_mut().and_then(|f| f.read(&mut buf).ok()).filter(|n| *n > 0) {
            pending.extend_from_slice(&buf[..n]);
            last = Instant::now();
        }
        while let Some(i) = pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let l = String::from_utf8_lossy(&line).replace('\r', "");
            let _ = out.write_all(l.as_bytes());
            all.push_str(&l);
        }
        let _ = out.flush();
        if let Some(st) = exited {
            return (all, st.code().unwrap_or(255), false);
        }
        if last.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return (all, 255, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
