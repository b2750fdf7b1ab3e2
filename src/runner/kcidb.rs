//! A report as KCIDB I/O JSON (schema v5.3, as the `kcidb-io` package
//! validates it): one checkout (the kernel under test), one build, and one
//! test object per case, where KernelCI's dashboards and `kcidb-submit`
//! read results.
//!
//! Test paths are `uffd.<binary>.<case>.<memtype>` (module segments of the
//! case become path levels; a case without a memory type ends at its name).
//! Statuses: pass and xfail → PASS; fail, timeout and xpass → FAIL; skip →
//! SKIP; could not run → ERROR; result never seen (the log ended, the
//! kernel died) → MISS. A case that did not pass carries its reason, the
//! failure message and the kernel log lines of its run as `log_excerpt`.

use super::result::{Report, Status, TestResult};
use serde_json::{Value, json};

/// The schema version written.
pub const VERSION: (u32, u32) = (5, 3);

/// The KCIDB field's limit on `log_excerpt`.
const EXCERPT_MAX: usize = 16384;

/// Who submits, and what was tested: what the report itself does not know.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The submitting CI system (`^[a-z0-9_]+$`), prefix of every id.
    pub origin: String,
    /// The kernel under test: its release (`6.12.48+deb13-cloud-amd64`) or the image it came from.
    pub kernel: String,
    /// The target architecture (`x86_64`).
    pub arch: String,
    /// When the run started, seconds since the epoch; None: the first case's start, else now.
    pub start_unix: Option<f64>,
    /// What else to say about the run (`uffdtest run`, `uffdtest vm --accel tcg`).
    pub comment: String,
}

impl Submission {
    /// A submission from this machine's `uname`, for a run on the running kernel.
    pub fn running_kernel(comment: &str) -> Submission {
        let u = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            u.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Submission {
            origin: "uffdtest".into(),
            kernel: field(|u| u.release()),
            arch: field(|u| u.machine()),
            start_unix: None,
            comment: comment.into(),
        }
    }
}

/// Seconds since the epoch, now.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// RFC 3339 in UTC with microseconds (`2020-08-14T23:08:06.967000+00:00`), as KCIDB's examples.
pub fn rfc3339(unix: f64) -> String {
    let micros = (unix * 1e6).round() as i64;
    let (secs, us) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}+00:00",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// KCIDB's status for ours.
pub fn status(s: Status) -> &'static str {
    match s {
        Status::Pass | Status::Xfail => "PASS",
        Status::Fail | Status::Timeout | Status::Xpass => "FAIL",
        Status::Skip => "SKIP",
        Status::Error => "ERROR",
        Status::Crashed => "MISS",
    }
}

/// One path component: what KCIDB allows (`[a-zA-Z0-9_-]`), anything else as `_`.
fn component(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c.is_empty() { "_".into() } else { c }
}

/// `uffd.<binary>.<case>[.<memtype>]` for a leaf under `group`.
pub fn test_path(group: &str, leaf: &TestResult) -> String {
    let (case, memtype) = match &leaf.test {
        // The runner's libtest name: `mod::test::case_2_shmem_private`, the variant already decoded.
        Some(t) => {
            let base = match t.rsplit_once("::") {
                Some((head, last)) if last.starts_with("case_") && leaf.variant.is_some() => head,
                _ => t.as_str(),
            };
            (
                base.split("::").map(component).collect::<Vec<_>>(),
                leaf.variant.clone(),
            )
        }
        // A parsed log: `copy_fills_missing_page on shmem-private`.
        None => match leaf.name.rsplit_once(" on ") {
            Some((c, v)) => (vec![component(c)], Some(v.to_string())),
            None => (vec![component(&leaf.name)], None),
        },
    };
    let mut parts = vec!["uffd".to_string(), component(group)];
    parts.extend(case);
    parts.extend(memtype.as_deref().map(component));
    parts.join(".")
}

/// What a case that did not pass says: its reason, message and kernel log, cut to KCIDB's limit.
fn excerpt(t: &TestResult) -> Option<String> {
    if matches!(t.status, Status::Pass | Status::Xfail) {
        return None;
    }
    let mut s = String::new();
    if let Some(r) = &t.reason {
        s.push_str(r);
        s.push('\n');
    }
    for d in &t.diagnostics {
        s.push_str(d);
        s.push('\n');
    }
    if !t.kmsg.is_empty() {
        s.push_str("kernel log:\n");
        for k in &t.kmsg {
            s.push_str(k);
            s.push('\n');
        }
    }
    let s = s.replace('\0', "");
    if s.is_empty() {
        return None;
    }
    if s.len() <= EXCERPT_MAX {
        return Some(s);
    }
    let mut cut = EXCERPT_MAX - 20;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}\n[... cut]\n", &s[..cut]))
}

/// The report as one KCIDB I/O document. `misc(path, leaf)` may add fields
/// to a test's `misc` (compare adds how the case moved).
pub fn document(r: &Report, s: &Submission, misc: &dyn Fn(&[&str], &TestResult) -> Option<Value>) -> Value {
    let origin = component(&s.origin).to_ascii_lowercase().replace('-', "_");
    let first_case = r
        .leaves()
        .iter()
        .filter_map(|(_, t)| t.start_unix)
        .min_by(|a, b| a.total_cmp(b));
    let start = s.start_unix.or(r.start_unix).or(first_case).unwrap_or_else(now_unix);
    let checkout_id = format!("{origin}:{}@{}", s.kernel, start as u64);
    let build_id = format!("{checkout_id}/build");
    let mut tests = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for (path, leaf) in r.leaves() {
        let group = path.first().copied().unwrap_or("");
        let tpath = test_path(group, leaf);
        // `--repeat` runs a case more than once: each run its own id.
        let n = seen.entry(tpath.clone()).or_default();
        *n += 1;
        let id = if *n == 1 {
            format!("{build_id}/{tpath}")
        } else {
            format!("{build_id}/{tpath}#{n}")
        };
        let mut t = json!({
            "id": id,
            "build_id": build_id,
            "origin": origin,
            "path": tpath,
            "comment": format!("{group}: {}", leaf.name),
            "status": status(leaf.status),
        });
        if let Some(st) = leaf.start_unix {
            t["start_time"] = json!(rfc3339(st));
        }
        if let Some(d) = leaf.duration_secs {
            t["duration"] = json!(d);
        }
        if let Some(e) = excerpt(leaf) {
            t["log_excerpt"] = json!(e);
        }
        let mut m = json!({ "uffdtest_status": leaf.status.name() });
        for (k, v) in [
            ("libtest_name", leaf.test.clone().map(Value::from)),
            ("memtype", leaf.variant.clone().map(Value::from)),
            ("reason", leaf.reason.clone().map(Value::from)),
            ("exit_code", leaf.exit_code.map(Value::from)),
            ("signal", leaf.signal.clone().map(Value::from)),
            ("kernel_splat", (!leaf.kmsg.is_empty()).then_some(Value::Bool(true))),
            ("run", (*n > 1).then(|| Value::from(*n))),
        ] {
            if let Some(v) = v {
                m[k] = v;
            }
        }
        if let Some(Value::Object(extra)) = misc(&path, leaf) {
            for (k, v) in extra {
                m[k] = v;
            }
        }
        t["misc"] = m;
        tests.push(t);
    }
    let totals = r.totals();
    json!({
        "version": { "major": VERSION.0, "minor": VERSION.1 },
        "checkouts": [{
            "id": checkout_id,
            "origin": origin,
            "comment": format!("Linux {}", s.kernel),
            "start_time": rfc3339(start),
            "valid": true,
        }],
        "builds": [{
            "id": build_id,
            "checkout_id": checkout_id,
            "origin": origin,
            "comment": format!("the kernel under test: {}", s.kernel),
            "architecture": component(&s.arch).to_ascii_lowercase().replace('-', "_"),
            "start_time": rfc3339(start),
            "status": "PASS",
            "misc": { "run": s.comment, "summary": totals.summary_line(), "interrupted": r.interrupted },
        }],
        "tests": tests,
    })
}

/// [`document`] as pretty JSON text, with no extra `misc`.
pub fn to_string(r: &Report, s: &Submission) -> String {
    serde_json::to_string_pretty(&document(r, s, &|_, _| None)).expect("KCIDB document serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(rfc3339(1_597_446_486.967), "2020-08-14T23:08:06.967000+00:00");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500000+00:00");
    }

    #[test]
    fn paths_are_binary_case_memtype() {
        let mut t = TestResult::new("copy_fills on shmem-private", Status::Pass);
        t.test = Some("copy_fills::case_3_shmem_private".into());
        t.variant = Some("shmem-private".into());
        assert_eq!(test_path("copy", &t), "uffd.copy.copy_fills.shmem-private");
        let mut t = TestResult::new("args::zero_length_fails_einval", Status::Pass);
        t.test = Some("args::zero_length_fails_einval".into());
        assert_eq!(test_path("api", &t), "uffd.api.args.zero_length_fails_einval");
        let parsed = TestResult::new("wake_x on anon-thp", Status::Fail);
        assert_eq!(test_path("wake", &parsed), "uffd.wake.wake_x.anon-thp");
    }

    #[test]
    fn a_failure_carries_its_message_and_splat() {
        let mut t = TestResult::new("a on anon", Status::Fail).with_reason("kernel log: WARNING: x");
        t.kmsg = vec!["WARNING: CPU: 0 PID: 1 at mm/userfaultfd.c:1".into()];
        t.start_unix = Some(1_597_446_486.0);
        t.duration_secs = Some(0.25);
        let r = Report {
            tests: vec![TestResult::group(
                "copy",
                vec![t, TestResult::new("b on anon", Status::Crashed)],
            )],
            ..Report::default()
        };
        let s = Submission {
            origin: "uffdtest".into(),
            kernel: "6.12.0".into(),
            arch: "x86_64".into(),
            start_unix: Some(1_597_446_480.0),
            comment: "test".into(),
        };
        let d = document(&r, &s, &|_, _| None);
        let t = &d["tests"][0];
        assert_eq!(t["status"], "FAIL");
        assert_eq!(t["path"], "uffd.copy.a.anon");
        assert_eq!(t["start_time"], "2020-08-14T23:08:06.000000+00:00");
        assert!(t["log_excerpt"].as_str().unwrap().contains("mm/userfaultfd.c"));
        assert_eq!(d["tests"][1]["status"], "MISS");
        assert_eq!(d["checkouts"][0]["id"], "uffdtest:6.12.0@1597446480");
    }
}
