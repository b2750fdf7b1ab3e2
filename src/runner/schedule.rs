//! Which case starts next.
//!
//! With one job: plan order, exactly. With more: cases marked to run alone
//! go last (they never hold the others back while the slots drain for
//! them); a keyed case (`#[file_serial(thp)]`) never starts beside one
//! sharing a key, and is preferred over an unkeyed one when both could
//! start, so each key's chain of cases runs beside the rest of the suite
//! instead of after it.

use super::discover::Case;
use super::select::Plan;

/// What a running case holds: alone, or its keys.
pub struct Holding<'a> {
    pub alone: bool,
    pub keys: &'a [String],
}

/// The cases not started yet, in the order they are considered.
pub struct Queue {
    order: Vec<(usize, usize)>,
    started: Vec<bool>,
    /// Everything before it has started.
    next: usize,
    jobs: usize,
}

impl Queue {
    pub fn new(plan: &Plan, jobs: usize) -> Queue {
        let mut order: Vec<(usize, usize)> = plan
            .binaries
            .iter()
            .enumerate()
            .flat_map(|(b, pb)| (0..pb.cases.len()).map(move |c| (b, c)))
            .collect();
        if jobs > 1 {
            order.sort_by_key(|&(b, c)| plan.binaries[b].cases[c].serial);
        }
        Queue {
            started: vec![false; order.len()],
            order,
            next: 0,
            jobs,
        }
    }

    /// Whether every case has started (or been taken by [`Queue::rest`]).
    pub fn is_empty(&self) -> bool {
        self.next >= self.order.len()
    }

    /// The next case that may start beside `running`, marked started.
    pub fn pick(&mut self, plan: &Plan, running: &[Holding]) -> Option<(usize, usize)> {
        if running.iter().any(|r| r.alone) {
            return None;
        }
        let case = |i: usize| -> &Case {
            let (b, c) = self.order[i];
            &plan.binaries[b].cases[c]
        };
        let may_start = |c: &Case| {
            if c.serial {
                return running.is_empty();
            }
            !c.keys.iter().any(|k| running.iter().any(|r| r.keys.contains(k)))
        };
        let mut first = None;
        for i in (self.next..self.order.len()).filter(|&i| !self.started[i]) {
            let c = case(i);
            if !may_start(c) {
                continue;
            }
            // One job keeps plan order; more prefer a keyed case.
            if self.jobs == 1 || !c.keys.is_empty() {
                first = Some(i);
                break;
            }
            first.get_or_insert(i);
        }
        first.map(|i| self.take(i))
    }

    fn take(&mut self, i: usize) -> (usize, usize) {
        self.started[i] = true;
        while self.next < self.order.len() && self.started[self.next] {
            self.next += 1;
        }
        self.order[i]
    }

    /// Every case not started, in order, taken off the queue (to report
    /// them as not run).
    pub fn rest(&mut self) -> Vec<(usize, usize)> {
        let rest: Vec<usize> = (self.next..self.order.len()).filter(|&i| !self.started[i]).collect();
        rest.into_iter().map(|i| self.take(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::select::PlannedBinary;

    fn plan(cases: &[(&str, bool, &[&str])]) -> Plan {
        let cases = cases
            .iter()
            .map(|&(n, serial, keys)| Case {
                binary: "b".into(),
                path: "/bin/true".into(),
                test: n.into(),
                name: n.into(),
                variant: None,
                ignored: false,
                serial,
                keys: keys.iter().map(|k| k.to_string()).collect(),
            })
            .collect();
        Plan {
            binaries: vec![PlannedBinary {
                name: "b".into(),
                cases,
                error: None,
            }],
        }
    }

    fn name(plan: &Plan, at: Option<(usize, usize)>) -> Option<&str> {
        at.map(|(b, c)| plan.binaries[b].cases[c].test.as_str())
    }

    #[test]
    fn one_job_keeps_plan_order() {
        let p = plan(&[("a", false, &[]), ("alone", true, &[]), ("k", false, &["thp"])]);
        let mut q = Queue::new(&p, 1);
        let got: Vec<_> = std::iter::from_fn(|| name(&p, q.pick(&p, &[])).map(str::to_string)).collect();
        assert_eq!(got, ["a", "alone", "k"]);
        assert!(q.is_empty());
    }

    #[test]
    fn keyed_cases_go_first_and_never_share_a_key() {
        let p = plan(&[
            ("a", false, &[]),
            ("t1", false, &["thp"]),
            ("t2", false, &["thp"]),
            ("alone", true, &[]),
            ("k1", false, &["ksm"]),
        ]);
        let mut q = Queue::new(&p, 2);
        let thp = ["thp".to_string()];
        assert_eq!(name(&p, q.pick(&p, &[])), Some("t1"));
        let held = [Holding {
            alone: false,
            keys: &thp,
        }];
        // t2 shares thp with the running t1: the ksm case is the keyed one free.
        assert_eq!(name(&p, q.pick(&p, &held)), Some("k1"));
        assert_eq!(name(&p, q.pick(&p, &held)), Some("a"));
        assert_eq!(name(&p, q.pick(&p, &held)), None, "t2 waits for t1, alone for all");
        assert_eq!(name(&p, q.pick(&p, &[])), Some("t2"));
        let t2 = [Holding {
            alone: false,
            keys: &thp,
        }];
        assert_eq!(name(&p, q.pick(&p, &t2)), None);
        assert_eq!(name(&p, q.pick(&p, &[])), Some("alone"));
        assert_eq!(name(&p, q.pick(&p, &[Holding { alone: true, keys: &[] }])), None);
        assert!(q.is_empty());
    }

    #[test]
    fn rest_takes_what_has_not_started() {
        let p = plan(&[("t1", false, &["thp"]), ("a", false, &[]), ("b", false, &[])]);
        let mut q = Queue::new(&p, 2);
        assert_eq!(name(&p, q.pick(&p, &[])), Some("t1"));
        assert_eq!(q.rest(), [(0, 1), (0, 2)]);
        assert!(q.is_empty());
    }
}
