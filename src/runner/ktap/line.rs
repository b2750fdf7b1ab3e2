//! One KTAP result line: `ok|not ok N [- ]name[ # directive]`, and what its directive means.

use crate::runner::result::Status;

/// A parsed result line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    pub ok: bool,
    pub number: usize,
    pub name: String,
    /// Text after ` # `, if any.
    pub directive: Option<String>,
}

/// Parses a result line.
///
/// Accepted format: `ok|not ok N [- ][description][ # directive]`, with or
/// without a description, so kselftest's `ok 1 # SKIP msg`,
/// `not ok 2 # error boom` and a bare `ok 3` are read too (kunit.py is stricter).
pub fn parse_result_line(line: &str) -> Option<ResultLine> {
    let t = line.trim_start();
    let (ok, rest) = if let Some(r) = t.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = t.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = rest[..digits].parse().ok()?;
    let rest = &rest[digits..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = format!(" {}", rest.trim_start());
    let rest = rest.strip_prefix(" - ").map(|r| format!(" {r}")).unwrap_or(rest);
    let (name, directive) = match rest
        .find(" # ")
        .or_else(|| rest.trim_end().ends_with(" #").then_some(rest.len()))
    {
        Some(i) if i < rest.len() => (rest[..i].trim().to_string(), Some(rest[i + 3..].trim().to_string())),
        Some(_) => (rest.trim_end().trim_end_matches('#').trim().to_string(), None),
        None => (rest.trim().to_string(), None),
    };
    Some(ResultLine {
        ok,
        number,
        name,
        directive,
    })
}

/// The status and reason a result line's directive gives.
///
/// Directives: `SKIP` (with ok or not ok), `XFAIL`, `XPASS`, `TODO` (a not-ok
/// TODO is an expected failure), `TIMEOUT`, `ERROR`/`error`; anything else
/// falls back to ok/not ok, its text kept as the reason (`exit=1`,
/// `killed by signal SIGSEGV`).
pub fn directive_status(ok: bool, directive: Option<&str>) -> (Status, Option<String>) {
    let fallback = if ok { Status::Pass } else { Status::Fail };
    let Some(d) = directive.map(str::trim).filter(|d| !d.is_empty()) else {
        return (fallback, None);
    };
    let (word, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
    let rest = rest.trim();
    let reason = (!rest.is_empty()).then(|| rest.to_string());
    let status = match word.to_ascii_uppercase().as_str() {
        "SKIP" if word == "SKIP" || word == "skip" => Status::Skip,
        "XFAIL" => Status::Xfail,
        "XPASS" => Status::Xpass,
        "TODO" => {
            if ok {
                Status::Pass
            } else {
                Status::Xfail
            }
        }
        "TIMEOUT" => Status::Timeout,
        "ERROR" => {
            if rest.starts_with("crashed") {
                let r = rest.trim_start_matches("crashed").trim();
                return (Status::Crashed, (!r.is_empty()).then(|| r.to_string()));
            }
            Status::Error
        }
        _ => return (fallback, Some(d.to_string())),
    };
    (status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain("ok 1 name", true, 1, "name", None)]
    #[case::dash("not ok 12 - name here", false, 12, "name here", None)]
    #[case::directive("ok 2 a on anon # SKIP why not", true, 2, "a on anon", Some("SKIP why not"))]
    #[case::kselftest_skip_without_name("ok 3 # SKIP no uffd", true, 3, "", Some("SKIP no uffd"))]
    #[case::kselftest_error("not ok 4 # error boom", false, 4, "", Some("error boom"))]
    #[case::bare("ok 5", true, 5, "", None)]
    #[case::indented("    ok 6 x", true, 6, "x", None)]
    #[case::two_space_message("ok 7 name #  msg", true, 7, "name", Some("msg"))]
    fn result_lines_are_read(
        #[case] line: &str,
        #[case] ok: bool,
        #[case] number: usize,
        #[case] name: &str,
        #[case] directive: Option<&str>,
    ) {
        let r = parse_result_line(line).unwrap();
        assert_eq!(
            (r.ok, r.number, r.name.as_str(), r.directive.as_deref()),
            (ok, number, name, directive)
        );
    }

    #[rstest]
    #[case::text("okay 1 x")]
    #[case::no_number("ok x")]
    #[case::diagnostic("# ok 1 x")]
    fn non_result_lines_are_not_results(#[case] line: &str) {
        assert_eq!(parse_result_line(line), None);
    }

    #[rstest]
    #[case::skip(true, Some("SKIP r"), Status::Skip, Some("r"))]
    #[case::not_ok_skip(false, Some("SKIP"), Status::Skip, None)]
    #[case::xfail(true, Some("XFAIL known"), Status::Xfail, Some("known"))]
    #[case::timeout(false, Some("TIMEOUT 45 seconds"), Status::Timeout, Some("45 seconds"))]
    #[case::lowercase_error(false, Some("error boom"), Status::Error, Some("boom"))]
    #[case::exit_code(false, Some("exit=1"), Status::Fail, Some("exit=1"))]
    #[case::todo(false, Some("TODO later"), Status::Xfail, Some("later"))]
    #[case::unknown_on_ok(true, Some("whatever"), Status::Pass, Some("whatever"))]
    fn directives_map_to_statuses(
        #[case] ok: bool,
        #[case] d: Option<&str>,
        #[case] status: Status,
        #[case] reason: Option<&str>,
    ) {
        assert_eq!(directive_status(ok, d), (status, reason.map(str::to_string)));
    }
}
