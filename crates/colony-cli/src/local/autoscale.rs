//! The autoscaler: a service's next desired count, from its instances' load, its settings
//! and what it remembers of its last decisions. A pure function; the orchestrator's tick
//! gathers the loads, applies the decision and records the event.
//!
//! Owns: the scaling rule. Load is calls in flight over the healthy instances' capacity;
//! above the high watermark it adds an instance (up to the ceiling); below the low
//! watermark for a whole cool-down it removes one (down to `min_instances`); after any
//! change it waits four heartbeats for the new count to settle, and it does nothing while
//! an instance is starting or being re-adopted. Must not touch: processes, or the desired
//! counts themselves (the orchestrator owns those, and `colony scale` sets them too).

use std::time::{Duration, Instant};

use crate::settings::ServiceSettings;

/// The settings the rule reads, of one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Policy {
    pub(super) min: u32,
    /// `max_instances`, capped by `max_per_host`.
    pub(super) ceiling: u32,
    pub(super) high_watermark: f64,
    pub(super) low_watermark: f64,
    pub(super) cooldown_ms: u64,
    /// Calls in flight per instance that count as full load (ratio 1.0).
    pub(super) capacity: u32,
}

impl Policy {
    pub(super) fn of(s: &ServiceSettings) -> Policy {
        Policy {
            min: s.min_instances.value,
            ceiling: s.ceiling(),
            high_watermark: s.high_watermark.value,
            low_watermark: s.low_watermark.value,
            cooldown_ms: s.cooldown_ms.value,
            capacity: s.capacity.value,
        }
    }
}

/// What a service looks like now.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Observed {
    /// Calls in flight at each healthy instance.
    pub(super) in_flight: Vec<u64>,
    /// Whether an instance is starting or being re-adopted (its load is not known yet).
    pub(super) starting: bool,
    pub(super) desired: u32,
}

/// What the autoscaler remembers of a service between ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Memory {
    /// Since when its load has been below the low watermark.
    pub(super) below_since: Option<Instant>,
    /// When it last scaled (by the autoscaler or `colony scale`).
    pub(super) last_scaled: Option<Instant>,
}

impl Memory {
    /// After a scaling by hand: the autoscaler takes over from the new count, after a full
    /// cool-down.
    pub(super) fn scaled_by_hand(now: Instant) -> Memory {
        Memory {
            below_since: Some(now),
            last_scaled: Some(now),
        }
    }
}

/// A change of the desired count.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scale {
    /// `scale_up` or `scale_down`: the event's kind.
    pub(super) kind: &'static str,
    pub(super) from: u32,
    pub(super) to: u32,
    /// Why, for the event log.
    pub(super) reason: String,
}

/// The autoscaler's decision for one service: what it now remembers, and a change of the
/// desired count if any.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decision {
    pub(super) memory: Memory,
    pub(super) scale: Option<Scale>,
}

/// Decide for one service at `now`. `settle` is how long after a change the count is left
/// alone (four heartbeats).
pub(super) fn decide(
    observed: &Observed,
    policy: &Policy,
    memory: Memory,
    settle: Duration,
    now: Instant,
) -> Decision {
    let mut memory = memory;
    let healthy = observed.in_flight.len();
    if healthy == 0 || observed.starting {
        return Decision {
            memory,
            scale: None,
        };
    }
    let in_flight: u64 = observed.in_flight.iter().sum();
    let ratio = in_flight as f64 / (healthy as f64 * f64::from(policy.capacity));
    let desired = observed.desired;
    let recently = memory.last_scaled.is_some_and(|t| now - t < settle);
    let mut scale = None;
    if ratio > policy.high_watermark {
        memory.below_since = None;
        if desired < policy.ceiling && !recently {
            memory.last_scaled = Some(now);
            scale = Some(Scale {
                kind: "scale_up",
                from: desired,
                to: desired + 1,
                reason: format!(
                    "load {ratio:.2} ({in_flight} in flight over {healthy} instances × capacity {}) is above the high watermark {}: {} → {}",
                    policy.capacity,
                    policy.high_watermark,
                    desired,
                    desired + 1
                ),
            });
        }
    } else if ratio < policy.low_watermark && desired > policy.min {
        let since = *memory.below_since.get_or_insert(now);
        let cooldown = Duration::from_millis(policy.cooldown_ms);
        if now - since >= cooldown && !recently {
            memory.last_scaled = Some(now);
            memory.below_since = Some(now);
            scale = Some(Scale {
                kind: "scale_down",
                from: desired,
                to: desired - 1,
                reason: format!(
                    "load {ratio:.2} stayed below the low watermark {} for the cool-down of {} ms: {} → {}",
                    policy.low_watermark,
                    policy.cooldown_ms,
                    desired,
                    desired - 1
                ),
            });
        }
    } else {
        memory.below_since = None;
    }
    Decision { memory, scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(4);

    fn policy() -> Policy {
        Policy {
            min: 1,
            ceiling: 4,
            high_watermark: 0.8,
            low_watermark: 0.2,
            cooldown_ms: 10_000,
            capacity: 10,
        }
    }

    fn observed(in_flight: &[u64], desired: u32) -> Observed {
        Observed {
            in_flight: in_flight.to_vec(),
            starting: false,
            desired,
        }
    }

    /// A moment far enough from the process's start to subtract minutes from.
    fn now() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn load_above_the_high_watermark_adds_an_instance_and_says_why() {
        let now = now();
        let d = decide(
            &observed(&[9, 8], 2),
            &policy(),
            Memory::default(),
            SETTLE,
            now,
        );
        let scale = d.scale.expect("a scale-up");
        assert_eq!((scale.kind, scale.from, scale.to), ("scale_up", 2, 3));
        assert_eq!(
            scale.reason,
            "load 0.85 (17 in flight over 2 instances × capacity 10) is above the high watermark 0.8: 2 → 3"
        );
        assert_eq!(d.memory.last_scaled, Some(now));
        assert_eq!(d.memory.below_since, None);
    }

    #[test]
    fn no_scale_up_past_the_ceiling_nor_while_settling() {
        let now = now();
        let busy = observed(&[10, 10, 10, 10], 4);
        assert_eq!(
            decide(&busy, &policy(), Memory::default(), SETTLE, now).scale,
            None
        );
        let just_scaled = Memory {
            below_since: None,
            last_scaled: Some(now - Duration::from_secs(3)),
        };
        let busy = observed(&[10, 10], 2);
        assert_eq!(
            decide(&busy, &policy(), just_scaled, SETTLE, now).scale,
            None
        );
        let settled = Memory {
            below_since: None,
            last_scaled: Some(now - SETTLE),
        };
        assert!(
            decide(&busy, &policy(), settled, SETTLE, now)
                .scale
                .is_some()
        );
    }

    #[test]
    fn load_below_the_low_watermark_scales_down_only_after_the_cool_down() {
        let now = now();
        let idle = observed(&[1, 0, 0], 3);
        // The first tick below starts the cool-down.
        let first = decide(&idle, &policy(), Memory::default(), SETTLE, now);
        assert_eq!(first.scale, None);
        assert_eq!(first.memory.below_since, Some(now));
        // Not yet: 9.999 s later.
        let early = now + Duration::from_millis(9_999);
        assert_eq!(
            decide(&idle, &policy(), first.memory, SETTLE, early).scale,
            None
        );
        // After the cool-down: one fewer, and the cool-down starts again.
        let later = now + Duration::from_secs(10);
        let d = decide(&idle, &policy(), first.memory, SETTLE, later);
        let scale = d.scale.expect("a scale-down");
        assert_eq!((scale.kind, scale.from, scale.to), ("scale_down", 3, 2));
        assert_eq!(
            scale.reason,
            "load 0.03 stayed below the low watermark 0.2 for the cool-down of 10000 ms: 3 → 2"
        );
        assert_eq!(d.memory.below_since, Some(later));
        assert_eq!(d.memory.last_scaled, Some(later));
    }

    #[test]
    fn never_below_min_instances() {
        let now = now();
        let long_idle = Memory {
            below_since: Some(now - Duration::from_secs(60)),
            last_scaled: None,
        };
        let d = decide(&observed(&[0], 1), &policy(), long_idle, SETTLE, now);
        assert_eq!(d.scale, None);
        // At the minimum, being idle is not remembered as "below" (the else branch).
        assert_eq!(d.memory.below_since, None);
    }

    #[test]
    fn load_between_the_watermarks_resets_the_cool_down() {
        let now = now();
        let below = Memory {
            below_since: Some(now - Duration::from_secs(5)),
            last_scaled: None,
        };
        let d = decide(&observed(&[5, 5], 2), &policy(), below, SETTLE, now);
        assert_eq!(d.scale, None);
        assert_eq!(d.memory.below_since, None);
    }

    #[test]
    fn a_scaling_by_hand_holds_the_autoscaler_for_a_cool_down() {
        let now = now();
        let idle = observed(&[0, 0], 2);
        let memory = Memory::scaled_by_hand(now);
        let at = |s| now + Duration::from_secs(s);
        assert_eq!(decide(&idle, &policy(), memory, SETTLE, at(9)).scale, None);
        assert!(
            decide(&idle, &policy(), memory, SETTLE, at(10))
                .scale
                .is_some()
        );
    }

    #[test]
    fn nothing_while_an_instance_starts_or_none_is_healthy() {
        let now = now();
        let mut busy = observed(&[10, 10], 2);
        busy.starting = true;
        let memory = Memory {
            below_since: Some(now),
            last_scaled: None,
        };
        // No decision, and the memory is kept as it was.
        assert_eq!(
            decide(&busy, &policy(), memory, SETTLE, now),
            Decision {
                memory,
                scale: None
            }
        );
        let none = observed(&[], 2);
        assert_eq!(decide(&none, &policy(), memory, SETTLE, now).scale, None);
    }
}
