//! `uffdtest vm` and `uffdtest kconfig`: the VM harness's command line.

use crate::cli::Exit;
use crate::cli::run::{Outputs, Selection};
use crate::runner::discover;
use crate::vm::boot::AccelChoice;
use crate::vm::boot::{self, Accel};
use crate::vm::init::{Fault, GuestConfig};
use crate::vm::kconfig;
use crate::vm::run::{self as vmrun, GuestEnd, VmOptions};
use crate::vm::vng;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerKind {
    /// QEMU with the harness's own initramfs.
    Qemu,
    /// virtme-ng (`vng --run KERNEL --exec ...`), sharing the host's root.
    Vng,
}

#[derive(Args, Debug)]
pub struct VmArgs {
    /// The kernel under test: a bzImage/vmlinuz, or a kernel build tree (arch/x86/boot/bzImage).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    #[command(flatten)]
    pub sel: Selection,
    /// Accelerator: auto uses KVM only if it can run the guest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    #[arg(long, value_enum, default_value_t = RunnerKind::Qemu)]
    pub runner: RunnerKind,
    /// Guest memory in MiB.
    #[arg(short = 'm', long, default_value_t = 2048, value_name = "MIB")]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub smp: u32,
    /// Kill the guest after SECS without any output (console or KTAP); cases not run are reported.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Per-case timeout inside the guest.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub case_timeout: u64,
    /// Cases run at once in the guest; 1 keeps splat attribution exact.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Huge pages the guest init reserves.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub hugepages: u64,
    /// Extra kernel parameter. Repeatable.
    #[arg(long = "append", value_name = "PARAM")]
    pub append: Vec<String>,
    /// The static uffdtest for the guest's /init (default: this one if static, else built).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// The cargo project that builds the static guest binaries (when --manifest is not given).
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub source: PathBuf,
    /// Keep the whole kernel console in FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Echo the kernel console to stderr as it comes.
    #[arg(long)]
    pub show_console: bool,
    /// `-o` gets the final KTAP: splats and cases not run included.
    #[command(flatten)]
    pub out: Outputs,
    /// Make the guest init crash the kernel or hang mid-run (tests of the harness itself).
    #[arg(long, value_enum, hide = true)]
    pub inject: Option<Fault>,
}

#[derive(Args, Debug)]
pub struct KconfigArgs {
    /// Check a kernel .config against qemu/uffd.config and list what is missing.
    #[arg(long, value_name = "CONFIG")]
    pub check: Option<PathBuf>,
    /// Use this fragment instead of the built-in qemu/uffd.config.
    #[arg(long, value_name = "FILE")]
    pub fragment: Option<PathBuf>,
}

/// The run could not happen (bad input, no QEMU, the guest init could not start the suite).
fn infra(msg: &str) -> Exit {
    Exit::CouldNotRun.because("uffdtest", msg)
}

/// `uffdtest kconfig`: prints the fragment, or checks a `.config`
/// (exit 1 if a required option is missing).
pub fn kconfig_cmd(a: &KconfigArgs) -> Exit {
    let text = match &a.fragment {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => return infra(&format!("cannot read {}: {e}", p.display())),
        },
        None => kconfig::FRAGMENT.to_string(),
    };
    let frag = match kconfig::parse_fragment(&text) {
        Ok(f) => f,
        Err(e) => return infra(&e),
    };
    let Some(cfg) = &a.check else {
        print!("{text}");
        return Exit::Ok;
    };
    let config = match std::fs::read_to_string(cfg) {
        Ok(t) => t,
        Err(e) => return infra(&format!("cannot read {}: {e}", cfg.display())),
    };
    let missing = kconfig::check(&frag, &kconfig::parse_config(&config));
    print!("{}", kconfig::report(&cfg.display().to_string(), frag.len(), &missing));
    Exit::failed_if(missing.iter().any(|m| m.want.need == kconfig::Need::Required))
}

fn guest_config(a: &VmArgs) -> GuestConfig {
    GuestConfig {
        filters: a.sel.filters.clone(),
        skip: a.sel.skip.clone(),
        mem: a.sel.mem.clone(),
        ioctl: a.sel.ioctl.clone(),
        shard: a.sel.shard,
        run_ignored: a.sel.run_ignored,
        repeat: a.sel.repeat as usize,
        jobs: a.jobs,
        case_timeout_secs: a.case_timeout,
        hugepages: a.hugepages,
        heartbeat_secs: (a.timeout / 4).max(1),
        fault: a.inject,
    }
}

/// `uffdtest vm`.
pub fn vm_cmd(a: &VmArgs) -> Exit {
    if a.runner == RunnerKind::Vng {
        return vng_cmd(a);
    }
    let o = VmOptions {
        kernel: a.kernel.clone(),
        accel: a.accel,
        memory_mib: a.memory,
        cpus: a.smp,
        timeout: Duration::from_secs(a.timeout),
        console_log: a.console_log.clone(),
        show_console: a.show_console,
        guest: guest_config(a),
        manifest: a.sel.manifest.clone(),
        init: a.init.clone(),
        source: a.source.clone(),
        append: a.append.clone(),
    };
    let mut stdout = std::io::stdout();
    let run = match vmrun::run(&o, &mut stdout) {
        Ok(r) => r,
        Err(e) => return infra(&e),
    };
    let r = &run.report;
    let mut out = stdout.lock();
    for e in &run.guest_errors {
        eprintln!("uffdtest: the guest reported: {e}");
    }
    for s in &run.console.splats {
        let at = match &s.case {
            Some((b, c)) => format!("during {b}: {c}"),
            None => "before any case ran".into(),
        };
        let first = s.lines.first().map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "# kernel {} {at}: {first}", s.kind);
    }
    if run.console.started.is_empty() && run.end != GuestEnd::PoweredOff {
        eprintln!(
            "uffdtest: {} before the guest init ran any case; the console's last lines follow the KTAP",
            run.end
        );
    }
    if run.end != GuestEnd::PoweredOff {
        let _ = writeln!(out, "# {}; last console lines:", run.end);
        for l in run.console.tail().iter().rev().take(15).rev() {
            let _ = writeln!(out, "#   {l}");
        }
    }
    let t = r.totals();
    let since_boot = |d: Duration| format!("{:.1} s", d.saturating_sub(run.boot_started).as_secs_f64());
    let _ = writeln!(
        out,
        "# uffdtest vm: accel {}; build and pack {:.1} s; from boot: first KTAP line {}, verdict {}",
        run.accel,
        run.boot_started.as_secs_f64(),
        run.first_ktap.map(since_boot).unwrap_or_else(|| "never".into()),
        since_boot(run.elapsed)
    );
    let _ = writeln!(out, "# {}", t.ktap_line());
    let _ = writeln!(out, "{}", t.summary_line());
    let _ = out.flush();
    a.out.write(r, true);
    let ran_any = r
        .leaves()
        .iter()
        .any(|(_, t)| t.status != crate::runner::Status::Crashed);
    if !run.guest_errors.is_empty() && !ran_any {
        return Exit::CouldNotRun;
    }
    if !run.console.kernel_seen {
        eprintln!(
            "uffdtest: the kernel printed nothing on ttyS0 ({}); is {} a bootable x86_64 kernel with \
             CONFIG_SERIAL_8250_CONSOLE=y?",
            run.end,
            a.kernel.display()
        );
        return Exit::CouldNotRun;
    }
    Exit::from_report_code(r.exit_code())
}

/// The `uffdtest run` command the guest executes.
fn guest_command(a: &VmArgs, exe: &Path, manifest: &Path) -> String {
    let mut w: Vec<String> = vec![exe.display().to_string(), "run".into(), "--manifest".into()];
    w.push(manifest.display().to_string());
    w.extend(["--announce-kmsg".into(), "--jobs".into(), a.jobs.to_string()]);
    w.extend([
        "--timeout".into(),
        a.case_timeout.to_string(),
        "--hugepages".into(),
        a.hugepages.to_string(),
    ]);
    for f in &a.sel.filters {
        w.extend(["--filter".into(), f.clone()]);
    }
    for s in &a.sel.skip {
        w.extend(["--skip".into(), s.clone()]);
    }
    if !a.sel.mem.is_empty() {
        w.extend(["--mem".into(), a.sel.mem.join(",")]);
    }
    if !a.sel.ioctl.is_empty() {
        w.extend(["--ioctl".into(), a.sel.ioctl.join(",")]);
    }
    if let Some((k, n)) = a.sel.shard {
        w.extend(["--shard".into(), format!("{k}/{n}")]);
    }
    if a.sel.run_ignored {
        w.push("--run-ignored".into());
    }
    if a.sel.repeat > 1 {
        w.extend(["--repeat".into(), a.sel.repeat.to_string()]);
    }
    w.iter().map(|s| vng::quote(s)).collect::<Vec<_>>().join(" ")
}

/// `uffdtest vm --runner vng`.
pub fn vng_cmd(a: &VmArgs) -> Exit {
    let fail = infra;
    let kernel = match boot::resolve_kernel(&a.kernel) {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let share = match vng::missing_pieces(kernel.config.as_deref()) {
        Ok(s) => s,
        Err(m) => return fail(&format!("--runner vng cannot run here:\n  {}", m.join("\n  "))),
    };
    let manifest: PathBuf = a.sel.manifest.clone().unwrap_or_else(discover::default_manifest);
    if a.sel.build {
        match discover::build(&[]) {
            Ok(m) => {
                if let Err(e) = m.save(&manifest) {
                    return fail(&e);
                }
            }
            Err(e) => return fail(&e),
        }
    }
    if !manifest.is_file() {
        return fail(&format!(
            "no test manifest at {}: pass --build or --manifest",
            manifest.display()
        ));
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("uffdtest"));
    // KVM that cannot run a standard guest (see boot::kvm_failed) is only
    // found by booting; vng gives no early sign, so auto means TCG unless forced.
    let accel = match a.accel {
        boot::AccelChoice::Kvm => Accel::Kvm,
        _ => Accel::Tcg,
    };
    // The guest writes KTAP into a directory vng shares read-write (its
    // other host paths are overlays whose writes the host never sees), and
    // the host follows the file: vng forwards the command's stdout only when
    // the guest has udev, and mixes it with console noise otherwise.
    let dir = std::env::temp_dir().join(format!("uffdtest-vng-{}", std::process::id()));
    let ktap_file = dir.join("ktap.txt");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&ktap_file, "")) {
        return fail(&format!("cannot create {}: {e}", ktap_file.display()));
    }
    let exec = format!(
        "{} >{} 2>/dev/null",
        guest_command(a, &exe, &manifest),
        vng::quote(&ktap_file.display().to_string())
    );
    let mut args = vng::vng_args(&kernel.image, accel, &share, a.memory, a.smp, &a.append, &exec);
    args.splice(0..0, ["--rwdir".to_string(), dir.display().to_string()]);
    let child = Command::new("vng")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start vng: {e}")),
    };
    let (ktap, status, silent) = follow_ktap(&mut child, &ktap_file, Duration::from_secs(a.timeout));
    let _ = std::fs::remove_dir_all(&dir);
    if silent {
        eprintln!(
            "uffdtest: the vng guest wrote no KTAP for {} s and was killed",
            a.timeout
        );
    }
    let report = match crate::runner::parse_ktap(&ktap) {
        Ok(r) => r,
        Err(_) => {
            return fail(&format!(
                "vng exited {status} without KTAP: the guest did not run the suite (255 means the guest panicked or \
                 could not mount its root; rerun vng by hand with --verbose to see the console)"
            ));
        }
    };
    a.out.write(&report, true);
    if status != 0 {
        eprintln!("uffdtest: vng exited {status}; the verdict comes from the KTAP (cases it lacks count as crashed)");
    }
    Exit::from_report_code(report.exit_code())
}

/// Relays the lines the guest appends to `file` until `child` exits, or
/// kills it after `timeout` without a new line. Returns the text, the exit
/// code (255 when killed) and whether it went silent.
fn follow_ktap(child: &mut std::process::Child, file: &Path, timeout: Duration) -> (String, i32, bool) {
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok();
    let mut all = String::new();
    let mut pending = Vec::new();
    let mut last = std::time::Instant::now();
    let mut out = std::io::stdout();
    loop {
        let exited = child.try_wait().ok().flatten();
        let mut buf = [0u8; 8192];
        while let Some(n) = f.as_mut().and_then(|f| f.read(&mut buf).ok()).filter(|n| *n > 0) {
            pending.extend_from_slice(&buf[..n]);
            last = std::time::Instant::now();
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
