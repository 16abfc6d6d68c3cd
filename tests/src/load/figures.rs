//! The arithmetic of a fault test's verdict: what the driver recorded ([`Ledger`]) against
//! what the operation log holds ([`LogView`]) gives the [`Figures`], and the figures say what is
//! wrong. Pure functions, so that what makes a fault test fail is tested without a fault.

use std::collections::{HashMap, HashSet};

use tasksync_shared::OutcomeStatus;
use uuid::Uuid;

use super::{Ledger, Write};

/// What the operation log and the tasks table hold for the driver's writes.
#[derive(Debug, Default)]
pub struct LogView {
    /// Outcome of each acknowledged op id found in the log.
    pub outcomes: HashMap<Uuid, OutcomeStatus>,
    /// Per task: entries in the log, and the stored title (`None` when no row).
    pub tasks: HashMap<Uuid, (u64, Option<String>)>,
    /// (task, title) of every entry of the driver's tasks decided `success`.
    pub applied_titles: HashSet<(Uuid, String)>,
}

/// The figures a fault test reports (the README's "Guarantees" table).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Distinct writes the driver meant to make.
    pub planned: u64,
    /// Distinct writes the driver issued, counted when first issued, whatever the answers.
    pub sent: u64,
    /// Writes the api acknowledged (2xx or 202), counted from its answers.
    pub acknowledged: u64,
    /// Acknowledged writes found in the operation log with outcome `success` (or, for a retried
    /// write, decided after an earlier request of it was applied: see `Write::applied`).
    pub applied: u64,
    /// Acknowledged writes not applied: missing from the log, or decided otherwise.
    pub lost: u64,
    /// Log entries beyond what the driver's requests can explain.
    pub duplicated: u64,
    /// Tasks whose final title is not that of their last acknowledged write.
    pub diverged: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, acknowledged {}, applied {}, lost {}, duplicated {}, diverged {} \
             ({} planned)",
            self.sent,
            self.acknowledged,
            self.applied,
            self.lost,
            self.duplicated,
            self.diverged,
            self.planned
        )
    }
}

impl Figures {
    /// What is wrong with these figures; empty when every planned write was sent,
    /// acknowledged and applied exactly once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.sent != self.planned {
            problems.push(format!(
                "{} planned writes never issued",
                self.planned.abs_diff(self.sent)
            ));
        }
        if self.acknowledged != self.sent {
            problems.push(format!(
                "{} writes issued and never acknowledged",
                self.sent.abs_diff(self.acknowledged)
            ));
        }
        if self.applied != self.acknowledged || self.lost != 0 {
            problems.push(format!("{} acknowledged writes lost", self.lost));
        }
        if self.duplicated != 0 {
            problems.push(format!("{} log entries duplicated", self.duplicated));
        }
        if self.diverged != 0 {
            problems.push(format!("{} tasks in an unexpected state", self.diverged));
        }
        problems
    }

    /// Prints the figures (the README quotes them) and fails the test on any problem.
    pub fn assert_clean(&self, name: &str) {
        eprintln!("FIGURES {name}: {self}");
        let problems = self.problems();
        assert!(
            problems.is_empty(),
            "{name}: {self}: {}",
            problems.join("; ")
        );
    }
}

impl Write {
    /// Whether this write is applied: its acknowledged operation is in the log, decided
    /// `success` — or decided otherwise because an earlier unanswered request of the same write
    /// was published after all and applied first (a retried create then finds its task taken).
    fn applied(&self, log: &LogView) -> bool {
        let Some(op) = self.acknowledged else {
            return false;
        };
        match log.outcomes.get(&op) {
            Some(OutcomeStatus::Success) => true,
            Some(_) => {
                self.unanswered > 0
                    && log
                        .applied_titles
                        .contains(&(self.task, self.title.clone()))
            }
            None => false,
        }
    }
}

impl Ledger {
    /// The figures of this ledger against `log`: a pure function, so that what makes a fault
    /// test fail can be tested without a fault.
    pub fn figures(&self, log: &LogView) -> Figures {
        let acknowledged = self.acknowledged();
        let applied = self.writes.iter().filter(|w| w.applied(log)).count() as u64;
        // Per task: entries its requests can explain, and the title of its last acknowledged
        // write (writes are in issue order per device, and a task has one device).
        let mut explained: HashMap<Uuid, (u64, Option<&str>)> = HashMap::new();
        for write in &self.writes {
            let entry = explained.entry(write.task).or_default();
            entry.0 += u64::from(write.unanswered);
            if write.acknowledged.is_some() {
                entry.0 += 1;
                entry.1 = Some(&write.title);
            }
        }
        let (mut duplicated, mut diverged) = (0, 0);
        for (task, (can_explain, title)) in &explained {
            let (logged, stored) = log.tasks.get(task).cloned().unwrap_or((0, None));
            duplicated += logged.saturating_sub(*can_explain);
            diverged += u64::from(title.is_some() && stored.as_deref() != *title);
        }
        Figures {
            planned: self.planned,
            sent: self.sent(),
            acknowledged: acknowledged.len() as u64,
            applied,
            lost: acknowledged.len() as u64 - applied,
            duplicated,
            diverged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger of `n` writes on `n` tasks, all acknowledged, and a log where all are applied.
    fn clean(n: usize) -> (Ledger, LogView) {
        let mut ledger = Ledger {
            planned: n as u64,
            ..Ledger::default()
        };
        let mut log = LogView::default();
        for i in 0..n {
            let (task, op) = (Uuid::new_v4(), Uuid::new_v4());
            let title = format!("write {i}");
            ledger.writes.push(Write {
                task,
                title: title.clone(),
                acknowledged: Some(op),
                unanswered: 0,
            });
            log.outcomes.insert(op, OutcomeStatus::Success);
            log.applied_titles.insert((task, title.clone()));
            log.tasks.insert(task, (1, Some(title)));
        }
        (ledger, log)
    }

    /// The figures of [`clean`]`(n)`.
    fn all_clean(n: u64) -> Figures {
        Figures {
            planned: n,
            sent: n,
            acknowledged: n,
            applied: n,
            ..Figures::default()
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let (ledger, log) = clean(5);
        let figures = ledger.figures(&log);
        assert_eq!(figures, all_clean(5));
        assert_eq!(figures.problems(), Vec::<String>::new());
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_log_is_lost_and_fails_the_check() {
        let (ledger, mut log) = clean(5);
        let missing = ledger.writes[2].clone();
        log.outcomes.remove(&missing.acknowledged.unwrap());
        log.tasks.insert(missing.task, (0, None));
        let figures = ledger.figures(&log);
        let expected = Figures {
            applied: 4,
            lost: 1,
            diverged: 1,
            ..all_clean(5)
        };
        assert_eq!(figures, expected);
        assert_eq!(
            figures.problems(),
            [
                "1 acknowledged writes lost",
                "1 tasks in an unexpected state"
            ]
        );
    }

    #[test]
    fn a_write_issued_and_never_acknowledged_fails_the_check() {
        let (mut ledger, log) = clean(5);
        ledger.writes[4].acknowledged = None;
        ledger.writes[4].unanswered = 3;
        let figures = ledger.figures(&log);
        let expected = Figures {
            acknowledged: 4,
            applied: 4,
            ..all_clean(5)
        };
        assert_eq!(figures, expected);
        assert_eq!(
            figures.problems(),
            ["1 writes issued and never acknowledged"]
        );
    }

    #[test]
    fn a_device_that_gave_up_fails_the_check() {
        let (mut ledger, log) = clean(5);
        ledger.planned = 8;
        assert_eq!(
            ledger.figures(&log).problems(),
            ["3 planned writes never issued"]
        );
    }

    #[test]
    fn unexplained_log_entries_are_duplicates_and_a_wrong_title_diverges() {
        let (ledger, mut log) = clean(3);
        let task = ledger.writes[0].task;
        log.tasks.insert(task, (2, Some("something else".into())));
        let figures = ledger.figures(&log);
        assert_eq!((figures.duplicated, figures.diverged), (1, 1));
        assert_eq!(figures.problems().len(), 2);
    }

    #[test]
    fn a_retry_that_finds_its_earlier_request_applied_counts_as_applied_once_decided() {
        let (mut ledger, mut log) = clean(2);
        let retried = &mut ledger.writes[0];
        retried.unanswered = 1;
        let (task, title, op) = (retried.task, retried.title.clone(), retried.acknowledged);
        // The unanswered create was applied; the acknowledged retry found the task taken.
        log.outcomes.insert(op.unwrap(), OutcomeStatus::Error);
        log.tasks.insert(task, (2, Some(title.clone())));
        log.applied_titles.insert((task, title));
        assert_eq!(ledger.figures(&log), all_clean(2));
        // An acknowledged retry that is never decided is still lost.
        log.outcomes.remove(&op.unwrap());
        assert_eq!(ledger.figures(&log).lost, 1);
    }

    #[test]
    fn an_acknowledged_write_decided_otherwise_is_not_applied() {
        let (ledger, mut log) = clean(2);
        log.outcomes
            .insert(ledger.writes[0].acknowledged.unwrap(), OutcomeStatus::Error);
        assert_eq!(ledger.figures(&log).lost, 1);
    }
}
