//! The calls parked on a connection, and the sweeper that keeps their deadlines.
//!
//! Owns: [`Pending`], a slab of slots indexed by request id, and [`sweep_deadlines`], one
//! task per connection that fails the calls whose deadline passed. Promises: parking and
//! completing a call costs no allocation once the slab has warmed up; a late reply never
//! completes the next call in the same slot; no timer per call. Must not touch: the
//! stream, or frames beyond handing a reply to the call it answers (`connection` owns
//! reading, writing and closing).

use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::connection::{Connection, Reply, RequestError};
use super::lock;
use crate::wire::Frame;

/// The calls parked on a connection: a slab of slots, so that parking and completing a
/// call costs no allocation once the connection has warmed up.
///
/// A request id is the slot's index in its low 32 bits and the slot's generation in its
/// high 32 bits, so that a late reply to an abandoned call never completes the slot's next
/// call.
///
/// Deadlines take no timer per call: one sweeper task per connection sleeps until the
/// earliest deadline it knows of (`next_sweep`), fails the calls whose deadline has passed,
/// and sleeps again. A call parked with an earlier deadline wakes it to re-arm.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<u32>,
    /// When the sweeper's timer fires; `None` while it waits for a deadline to keep.
    pub(super) next_sweep: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Slot {
    generation: u32,
    /// When the call runs out of time.
    deadline: Option<Instant>,
    pub(super) state: SlotState,
}

#[derive(Default)]
pub(super) enum SlotState {
    #[default]
    Free,
    /// A call waits; the waker of its last poll.
    Waiting(Option<Waker>),
    /// Its reply came (or the connection died); the call takes it at its next poll.
    Done(Reply),
    /// Its deadline passed with no reply.
    Expired,
}

impl Pending {
    /// Take a slot for a new call that must end by `deadline`. Returns the call's request
    /// id, and whether the sweeper must re-arm for this deadline.
    pub(super) fn park(&mut self, deadline: Option<Instant>) -> (u64, bool) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.deadline = deadline;
        slot.state = SlotState::Waiting(None);
        let id = (u64::from(slot.generation) << 32) | u64::from(index);
        let rearm = deadline.is_some_and(|d| self.next_sweep.is_none_or(|next| d < next));
        if rearm {
            self.next_sweep = deadline;
        }
        (id, rearm)
    }

    pub(super) fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        let slot = self.slots.get_mut((id & 0xffff_ffff) as usize)?;
        (u64::from(slot.generation) == id >> 32).then_some(slot)
    }

    fn release(&mut self, id: u64) {
        if let Some(slot) = self.slot(id)
            && !matches!(slot.state, SlotState::Free)
        {
            slot.state = SlotState::Free;
            self.free.push((id & 0xffff_ffff) as u32);
        }
    }

    /// Poll call `id` for its reply.
    pub(super) fn poll(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Frame, RequestError>> {
        let abandoned = || RequestError::Closed("the call was abandoned".to_owned());
        let Some(slot) = self.slot(id) else {
            return Poll::Ready(Err(abandoned()));
        };
        match &mut slot.state {
            SlotState::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Left in place, so that the caller's guard sees it and cancels the call.
            SlotState::Expired => Poll::Ready(Err(RequestError::Deadline)),
            SlotState::Done(_) => {
                let SlotState::Done(reply) = std::mem::take(&mut slot.state) else {
                    unreachable!("matched Done above");
                };
                self.release(id);
                Poll::Ready(reply.map_err(RequestError::Closed))
            }
            SlotState::Free => Poll::Ready(Err(abandoned())),
        }
    }

    /// Give call `id` its reply; returns the waker to wake once the lock is released.
    pub(super) fn complete(&mut self, id: u64, reply: Reply) -> Option<Waker> {
        let slot = self.slot(id)?;
        match std::mem::replace(&mut slot.state, SlotState::Done(reply)) {
            SlotState::Waiting(waker) => waker,
            other => {
                // Not waiting (a duplicate or late reply): leave the slot as it was.
                slot.state = other;
                None
            }
        }
    }

    /// Forget call `id` (its caller gave up). Returns whether the peer may still be working
    /// on it: the call was waiting, or its deadline passed before any reply.
    pub(super) fn abandon(&mut self, id: u64) -> bool {
        let working = self
            .slot(id)
            .is_some_and(|s| matches!(s.state, SlotState::Waiting(_) | SlotState::Expired));
        self.release(id);
        working
    }

    /// Expire the waiting calls whose deadline is not after `now`, and set the next sweep
    /// to the earliest deadline left. Returns the wakers of the expired calls.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            let (SlotState::Waiting(waker), Some(deadline)) = (&mut slot.state, slot.deadline)
            else {
                continue;
            };
            if deadline <= now {
                wakers.extend(waker.take());
                slot.state = SlotState::Expired;
            } else if next.is_none_or(|n| deadline < n) {
                next = Some(deadline);
            }
        }
        self.next_sweep = next;
        wakers
    }

    /// Fail every waiting call with `reason`; returns their wakers.
    pub(super) fn fail_all(&mut self, reason: &str) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for slot in &mut self.slots {
            if let SlotState::Waiting(waker) = &mut slot.state {
                wakers.extend(waker.take());
                slot.state = SlotState::Done(Err(reason.to_owned()));
            }
        }
        self.next_sweep = None;
        wakers
    }
}

/// Fail the calls on `conn` whose deadline passes, until the connection closes.
pub(super) async fn sweep_deadlines(conn: Connection) {
    let shared = &conn.shared;
    loop {
        let woken = shared.sweep.notified();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let next = lock(&shared.pending).next_sweep;
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = woken => continue,
                }
            }
            None => {
                woken.await;
                continue;
            }
        }
        let wakers = lock(&shared.pending).expire(Instant::now());
        wakers.into_iter().for_each(Waker::wake);
    }
}
