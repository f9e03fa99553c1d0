//! Health: what to do about each instance, from when it was last heard from and how long it
//! has been in its state. A pure function; the orchestrator's tick applies its verdicts.
//!
//! Owns: the thresholds (heartbeat silence → quarantine after 1.5 intervals → kill after 2
//! more; a start that never registers; an adopted instance that never re-registers; a
//! drain that never finishes). Promises: the same inputs give the same verdicts, in the
//! order of the instances given. Must not touch: processes, membership or events (the
//! orchestrator quarantines, kills, and records why).

use std::time::{Duration, Instant};

use super::state::State;

/// How long a new instance has to register before it is replaced.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a running instance found after a restart has to register again.
pub(super) const ADOPT_GRACE: Duration = Duration::from_secs(10);
/// How long a draining instance has to exit before it is killed.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);

/// What health needs to know of one instance.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    pub(super) id: String,
    pub(super) state: State,
    /// When it last registered or heartbeat.
    pub(super) last_seen: Instant,
    /// When it entered its current state.
    pub(super) since: Instant,
}

/// What to do about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Take it out of membership: it has been silent this long.
    Quarantine { id: String, silent: Duration },
    /// Kill it (and so replace it), for this reason.
    Kill { id: String, reason: String },
}

/// The verdicts for `instances` at `now`, with heartbeats every `heartbeat`.
pub(super) fn check(
    instances: impl IntoIterator<Item = Watched>,
    heartbeat: Duration,
    now: Instant,
) -> Vec<Verdict> {
    instances
        .into_iter()
        .filter_map(|i| verdict(&i, heartbeat, now))
        .collect()
}

fn verdict(i: &Watched, hb: Duration, now: Instant) -> Option<Verdict> {
    let silent = now - i.last_seen;
    let age = now - i.since;
    let kill = |reason: String| {
        Some(Verdict::Kill {
            id: i.id.clone(),
            reason,
        })
    };
    match i.state {
        State::Healthy if silent > hb.mul_f64(1.5) => Some(Verdict::Quarantine {
            id: i.id.clone(),
            silent,
        }),
        State::Quarantined if age > hb * 2 => {
            kill("quarantined and still silent: replacing it".to_owned())
        }
        State::Starting if age > START_TIMEOUT => {
            kill(format!("did not register within {START_TIMEOUT:?}"))
        }
        State::Adopting if age > (hb * 10).max(ADOPT_GRACE) => {
            kill("running but did not re-register after the orchestrator restarted".to_owned())
        }
        State::Draining if age > DRAIN_TIMEOUT => {
            kill(format!("did not finish draining within {DRAIN_TIMEOUT:?}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_millis(1000);

    /// An instance `silent` since its last heartbeat, in `state` for `age`, seen at `now`.
    fn watched(now: Instant, state: State, silent: Duration, age: Duration) -> Watched {
        Watched {
            id: "quote-1".to_owned(),
            state,
            last_seen: now - silent,
            since: now - age,
        }
    }

    fn check_one(state: State, silent_ms: u64, age_ms: u64) -> Vec<Verdict> {
        let now = Instant::now() + Duration::from_secs(3600);
        let i = watched(
            now,
            state,
            Duration::from_millis(silent_ms),
            Duration::from_millis(age_ms),
        );
        check([i], HB, now)
    }

    #[test]
    fn a_healthy_instance_is_quarantined_only_after_one_and_a_half_heartbeats_of_silence() {
        assert_eq!(check_one(State::Healthy, 1500, 60_000), vec![]);
        assert_eq!(
            check_one(State::Healthy, 1501, 60_000),
            vec![Verdict::Quarantine {
                id: "quote-1".to_owned(),
                silent: Duration::from_millis(1501),
            }]
        );
    }

    #[test]
    fn a_quarantined_instance_is_killed_after_two_more_heartbeats() {
        assert_eq!(check_one(State::Quarantined, 60_000, 2000), vec![]);
        assert_eq!(
            check_one(State::Quarantined, 60_000, 2001),
            vec![Verdict::Kill {
                id: "quote-1".to_owned(),
                reason: "quarantined and still silent: replacing it".to_owned(),
            }]
        );
    }

    #[test]
    fn an_instance_that_never_registers_is_killed_after_the_start_timeout() {
        assert_eq!(check_one(State::Starting, 60_000, 30_000), vec![]);
        let verdicts = check_one(State::Starting, 60_000, 30_001);
        assert!(
            matches!(&verdicts[..], [Verdict::Kill { reason, .. }] if reason == "did not register within 30s"),
            "{verdicts:?}"
        );
    }

    #[test]
    fn an_adopted_instance_gets_ten_heartbeats_but_at_least_the_grace_to_re_register() {
        // 10 heartbeats of 1 s: the 10 s grace decides.
        assert_eq!(check_one(State::Adopting, 0, 10_000), vec![]);
        assert_eq!(check_one(State::Adopting, 0, 10_001).len(), 1);
        // 10 heartbeats of 2 s are longer than the grace.
        let now = Instant::now() + Duration::from_secs(3600);
        let slow = Duration::from_secs(2);
        let i = |age| watched(now, State::Adopting, Duration::ZERO, age);
        assert_eq!(check([i(Duration::from_secs(20))], slow, now), vec![]);
        assert_eq!(
            check([i(Duration::from_millis(20_001))], slow, now).len(),
            1
        );
    }

    #[test]
    fn a_drain_that_does_not_finish_is_killed_after_the_drain_timeout() {
        assert_eq!(check_one(State::Draining, 60_000, 40_000), vec![]);
        let verdicts = check_one(State::Draining, 60_000, 40_001);
        assert!(
            matches!(&verdicts[..], [Verdict::Kill { reason, .. }] if reason == "did not finish draining within 40s"),
            "{verdicts:?}"
        );
    }

    #[test]
    fn silence_alone_never_kills_and_verdicts_keep_the_instances_order() {
        // A silent instance that is starting or draining is judged by its age, not silence.
        assert_eq!(check_one(State::Starting, 60_000, 0), vec![]);
        assert_eq!(check_one(State::Draining, 60_000, 0), vec![]);
        let now = Instant::now() + Duration::from_secs(3600);
        let mut a = watched(now, State::Healthy, Duration::from_secs(5), Duration::ZERO);
        a.id = "a".to_owned();
        let mut b = watched(now, State::Healthy, Duration::ZERO, Duration::ZERO);
        b.id = "b".to_owned();
        let mut c = watched(
            now,
            State::Quarantined,
            Duration::ZERO,
            Duration::from_secs(5),
        );
        c.id = "c".to_owned();
        let ids: Vec<String> = check([a, b, c], HB, now)
            .into_iter()
            .map(|v| match v {
                Verdict::Quarantine { id, .. } | Verdict::Kill { id, .. } => id,
            })
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }
}
