//! Which Releases `vigie run` reconciles next, as the operator's controller does: each
//! Release at most once at a time, a bounded number at once, woken by events (a
//! verdict, a change of the manifests, a person's request, the interval) or by its own
//! deadline. A Release woken while it is being reconciled runs once more after.
//!
//! Pure: the caller owns the clock and the tasks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The queue, over keys `K` and instants `T`.
#[derive(Debug)]
pub struct Queue<K, T> {
    limit: usize,
    in_flight: BTreeSet<K>,
    /// Woken, in the order they were woken; each once.
    pending: VecDeque<K>,
    queued: BTreeSet<K>,
    /// When each Release asked to be reconciled again, whatever happens.
    deadlines: BTreeMap<K, T>,
}

impl<K: Ord + Clone, T: Ord + Copy> Queue<K, T> {
    /// A queue running at most `limit` at once (at least one).
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: BTreeSet::new(),
            pending: VecDeque::new(),
            queued: BTreeSet::new(),
            deadlines: BTreeMap::new(),
        }
    }

    /// Asks for `key` to be reconciled (again, after the reconcile in flight if any).
    pub fn wake(&mut self, key: &K) {
        if self.queued.insert(key.clone()) {
            self.pending.push_back(key.clone());
        }
    }

    /// Wakes the Releases whose deadline is at or before `now`.
    pub fn wake_due(&mut self, now: T) {
        let due: Vec<K> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.deadlines.remove(&key);
            self.wake(&key);
        }
    }

    /// The Releases to start now, oldest woken first: woken, not in flight, as many as
    /// free places. They count as in flight until [`Queue::done`].
    pub fn take(&mut self) -> Vec<K> {
        let mut started = Vec::new();
        let mut waiting = VecDeque::new();
        while self.in_flight.len() < self.limit {
            let Some(key) = self.pending.pop_front() else {
                break;
            };
            if self.in_flight.contains(&key) {
                waiting.push_back(key);
                continue;
            }
            self.queued.remove(&key);
            self.in_flight.insert(key.clone());
            started.push(key);
        }
        // Those woken while in flight keep their place, ahead of the rest.
        while let Some(key) = waiting.pop_back() {
            self.pending.push_front(key);
        }
        started
    }

    /// `key`'s reconcile ended; `again`: when it asks to be reconciled even if nothing
    /// wakes it (replacing what it asked before).
    pub fn done(&mut self, key: &K, again: Option<T>) {
        self.in_flight.remove(key);
        match again {
            Some(at) => {
                self.deadlines.insert(key.clone(), at);
            }
            None => {
                self.deadlines.remove(key);
            }
        }
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<T> {
        self.deadlines.values().min().copied()
    }

    /// Forgets what is neither in flight nor kept (Releases gone from the manifests).
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.pending.retain(|k| keep(k));
        self.queued.retain(|k| keep(k));
        self.deadlines.retain(|k, _| keep(k));
    }

    /// How many are being reconciled.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether `key` is being reconciled.
    #[must_use]
    pub fn is_in_flight(&self, key: &K) -> bool {
        self.in_flight.contains(key)
    }

    /// How many are woken and waiting.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    type Q = Queue<&'static str, u32>;

    #[test]
    fn a_woken_release_starts_once_and_in_the_order_woken() {
        let mut q = Q::new(4);
        q.wake(&"b");
        q.wake(&"a");
        q.wake(&"b");
        assert_eq!(q.take(), ["b", "a"]);
        assert_eq!(q.take(), Vec::<&str>::new());
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn no_more_than_the_limit_run_at_once() {
        let mut q = Q::new(2);
        for k in ["a", "b", "c"] {
            q.wake(&k);
        }
        assert_eq!(q.take(), ["a", "b"]);
        assert_eq!(q.take(), Vec::<&str>::new());
        q.done(&"a", None);
        assert_eq!(q.take(), ["c"]);
        assert_eq!(Q::new(0).limit, 1);
    }

    #[test]
    fn a_release_woken_while_in_flight_runs_again_after_and_only_once() {
        let mut q = Q::new(4);
        q.wake(&"a");
        assert_eq!(q.take(), ["a"]);
        q.wake(&"a");
        q.wake(&"a");
        q.wake(&"b");
        // b does not wait for a; a waits for itself.
        assert_eq!(q.take(), ["b"]);
        assert!(q.is_in_flight(&"a"));
        q.done(&"a", None);
        assert_eq!(q.take(), ["a"]);
        q.done(&"a", None);
        assert_eq!(q.take(), Vec::<&str>::new());
    }

    #[test]
    fn one_slow_release_never_holds_the_others() {
        // "slow" stays in flight while others are woken and done many times over.
        let mut q = Q::new(2);
        q.wake(&"slow");
        assert_eq!(q.take(), ["slow"]);
        for _ in 0..10 {
            q.wake(&"slow");
            q.wake(&"fast");
            assert_eq!(q.take(), ["fast"]);
            q.done(&"fast", None);
        }
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn a_release_waiting_for_itself_keeps_its_place_ahead_of_later_ones() {
        let mut q = Q::new(2);
        q.wake(&"a");
        assert_eq!(q.take(), ["a"]);
        q.wake(&"a");
        q.wake(&"b");
        q.wake(&"c");
        assert_eq!(q.take(), ["b"]);
        q.done(&"a", None);
        q.done(&"b", None);
        assert_eq!(q.take(), ["a", "c"]);
    }

    #[test]
    fn deadlines_wake_when_due_and_the_last_reconcile_decides_them() {
        let mut q = Q::new(4);
        q.wake(&"a");
        q.wake(&"b");
        assert_eq!(q.take(), ["a", "b"]);
        q.done(&"a", Some(10));
        q.done(&"b", Some(5));
        assert_eq!(q.next_deadline(), Some(5));
        q.wake_due(4);
        assert_eq!(q.take(), Vec::<&str>::new());
        q.wake_due(5);
        assert_eq!(q.take(), ["b"]);
        assert_eq!(q.next_deadline(), Some(10));
        // b's new reconcile asks for nothing: its deadline is gone; a's is replaced.
        q.done(&"b", None);
        q.wake(&"a");
        assert_eq!(q.take(), ["a"]);
        q.done(&"a", Some(20));
        assert_eq!(q.next_deadline(), Some(20));
        q.done(&"a", None);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn releases_gone_from_the_manifests_are_forgotten_but_not_those_in_flight() {
        let mut q = Q::new(1);
        q.wake(&"a");
        assert_eq!(q.take(), ["a"]);
        q.wake(&"b");
        q.wake(&"a");
        q.done(&"a", Some(3));
        q.retain(|k| *k == "a");
        assert_eq!(q.pending(), 1);
        assert_eq!(q.take(), ["a"]);
        q.retain(|_| false);
        assert!(q.is_in_flight(&"a"));
        assert_eq!(q.next_deadline(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Wake(u8),
        Take,
        Done(u8, Option<u8>),
        Due(u8),
        Forget(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..4u8).prop_map(Op::Wake),
            Just(Op::Take),
            (0..4u8, proptest::option::of(0..20u8)).prop_map(|(k, at)| Op::Done(k, at)),
            (0..20u8).prop_map(Op::Due),
            (0..4u8).prop_map(Op::Forget),
        ]
    }

    proptest::proptest! {
        /// Whatever happens: never more than the limit at once, never one Release twice
        /// at once, and every Release woken is started once the others are done.
        #[test]
        fn the_queue_keeps_its_bounds_and_starts_every_woken_release(
            limit in 1..4usize,
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut q: Queue<u8, u8> = Queue::new(limit);
            let mut running = std::collections::BTreeSet::new();
            let mut woken = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Wake(k) => {
                        q.wake(&k);
                        woken.insert(k);
                    }
                    Op::Take => {
                        for k in q.take() {
                            proptest::prop_assert!(running.insert(k), "{k} started twice");
                            woken.remove(&k);
                        }
                    }
                    Op::Done(k, at) => {
                        if running.remove(&k) {
                            q.done(&k, at);
                        }
                    }
                    Op::Due(now) => {
                        let due: Vec<u8> = q.deadlines.iter().filter(|(_, t)| **t <= now).map(|(k, _)| *k).collect();
                        q.wake_due(now);
                        woken.extend(due);
                    }
                    Op::Forget(k) => {
                        q.retain(|x| *x != k);
                        woken.remove(&k);
                    }
                }
                proptest::prop_assert!(q.in_flight() <= limit);
                proptest::prop_assert_eq!(q.in_flight(), running.len());
            }
            // Drain: everything running ends, and what was woken starts, in turn.
            for _ in 0..8 {
                for k in std::mem::take(&mut running) {
                    q.done(&k, None);
                }
                for k in q.take() {
                    running.insert(k);
                    woken.remove(&k);
                }
            }
            proptest::prop_assert!(woken.is_empty(), "never started: {woken:?}");
        }
    }
}
