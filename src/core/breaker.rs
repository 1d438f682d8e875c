//! The blast-radius breaker of a policy on a target (DESIGN.md invariant 3): a run
//! that would cross a limit kills nothing and opens it; it closes by itself once a
//! run is back under the limits and the cool-down since the last crossing is over.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::plan::{LimitBreach, RunOutcome};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breaker {
    pub opened_at: Option<DateTime<Utc>>,
    pub last_breach_at: Option<DateTime<Utc>>,
    pub last_breach: Option<LimitBreach>,
}

/// What a run did to the breaker.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Closed and stays closed: the run's kills go ahead.
    Closed,
    /// This run crossed a limit and opened it.
    Opened(LimitBreach),
    /// It was open and stays open (the run crossed again, or the cool-down is not
    /// over): the run's kills are held back.
    StillOpen { since: DateTime<Utc> },
    /// A run under the limits after the cool-down closed it: kills go ahead.
    Reclosed { was_open_since: DateTime<Utc> },
}

impl Transition {
    /// Whether the run's victims may be killed.
    pub fn allows_kills(&self) -> bool {
        matches!(self, Transition::Closed | Transition::Reclosed { .. })
    }
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Feeds one run. A run on stale or partial data leaves the breaker as it is.
    pub fn observe(
        &mut self,
        outcome: &RunOutcome,
        cooldown: Duration,
        now: DateTime<Utc>,
    ) -> Transition {
        match outcome {
            RunOutcome::LimitCrossed(breach) => {
                self.last_breach_at = Some(now);
                self.last_breach = Some(breach.clone());
                match self.opened_at {
                    Some(since) => Transition::StillOpen { since },
                    None => {
                        self.opened_at = Some(now);
                        Transition::Opened(breach.clone())
                    }
                }
            }
            RunOutcome::Blocked(_) | RunOutcome::Ok => {
                let Some(since) = self.opened_at else {
                    return Transition::Closed;
                };
                let cooled = self.last_breach_at.is_none_or(|at| {
                    now - at
                        >= chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX)
                });
                if matches!(outcome, RunOutcome::Ok) && cooled {
                    *self = Breaker::default();
                    Transition::Reclosed {
                        was_open_since: since,
                    }
                } else {
                    Transition::StillOpen { since }
                }
            }
        }
    }

    /// An operator closes it early.
    pub fn reset(&mut self) {
        *self = Breaker::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn breach() -> LimitBreach {
        LimitBreach {
            victims: 10,
            sessions: 12,
            max_kills_per_run: Some(5),
            max_kill_fraction: None,
        }
    }

    #[test]
    fn opens_on_a_crossing_and_closes_after_the_cooldown() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let cooldown = Duration::from_secs(300);
        let mut b = Breaker::default();
        assert_eq!(b.observe(&RunOutcome::Ok, cooldown, t0), Transition::Closed);
        assert_eq!(
            b.observe(&RunOutcome::LimitCrossed(breach()), cooldown, t0),
            Transition::Opened(breach())
        );
        let t1 = t0 + chrono::Duration::seconds(60);
        assert_eq!(
            b.observe(&RunOutcome::Ok, cooldown, t1),
            Transition::StillOpen { since: t0 }
        );
        let t2 = t0 + chrono::Duration::seconds(300);
        assert_eq!(
            b.observe(&RunOutcome::Ok, cooldown, t2),
            Transition::Reclosed { was_open_since: t0 }
        );
        assert!(!b.is_open());
    }

    #[test]
    fn a_new_crossing_restarts_the_cooldown() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let cooldown = Duration::from_secs(300);
        let mut b = Breaker::default();
        b.observe(&RunOutcome::LimitCrossed(breach()), cooldown, t0);
        let t1 = t0 + chrono::Duration::seconds(200);
        assert_eq!(
            b.observe(&RunOutcome::LimitCrossed(breach()), cooldown, t1),
            Transition::StillOpen { since: t0 }
        );
        let t2 = t0 + chrono::Duration::seconds(400);
        assert_eq!(
            b.observe(&RunOutcome::Ok, cooldown, t2),
            Transition::StillOpen { since: t0 }
        );
        let t3 = t1 + chrono::Duration::seconds(300);
        assert!(b.observe(&RunOutcome::Ok, cooldown, t3).allows_kills());
    }
}
