//! The live event stream of `ddmctl monitor`: what happens in the tree and
//! to the drivers, as `udevadm monitor` shows it for the kernel.
//!
//! [`Monitor`] is a [`Listener`] of the core's events. It turns each event
//! into a [`MonitorEvent`] (names instead of ids, a sequence number and a
//! time) and appends it to every subscriber's queue. A subscriber is one
//! control connection that asked for [`ddf::proto::ControlRequest::Monitor`];
//! its thread takes events from the queue and writes them to the socket.
//!
//! **A subscriber never slows ddm down.** Publishing takes one short lock
//! and never waits on a subscriber: each queue holds at most [`QUEUE_MAX`]
//! events, and an event that finds a queue full is dropped for that
//! subscriber and counted. The subscriber then receives, in the place where
//! the events went missing, one [`Happened::Lost`] with how many were lost,
//! and the stream goes on. At most [`SUBSCRIBERS_MAX`] subscribers at once.
//!
//! The monitor is registered as a listener *before* the plugin manager, so
//! that a device is shown added before it is shown bound (the plugin manager
//! binds from inside the `DeviceAdded` event).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ddf::proto::{DriverState, Happened, MonitorEvent};

use crate::core::{Core, Event, Listener};
use crate::ids::InstanceId;
use crate::sync::{Condvar, Mutex, Rank};

/// Most events waiting for one subscriber; more are dropped (and counted).
pub const QUEUE_MAX: usize = 1024;

/// Most subscribers at once.
pub const SUBSCRIBERS_MAX: usize = 64;

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// [`SUBSCRIBERS_MAX`] streams are open already.
    #[error("too many monitors ({SUBSCRIBERS_MAX}) are listening already; try again later")]
    TooMany,
}

/// One entry of a subscriber's queue.
#[derive(Debug)]
enum Item {
    Event(MonitorEvent),
    /// Events dropped here because the queue was full: how many, and the
    /// sequence number of the last one.
    Lost {
        count: u64,
        last_seq: u64,
    },
}

#[derive(Debug)]
struct Queue {
    id: u64,
    items: VecDeque<Item>,
    /// Events in `items` (the `Lost` markers do not count).
    events: usize,
    wake: Arc<Condvar>,
}

#[derive(Debug, Default)]
struct Hub {
    seq: u64,
    next_id: u64,
    queues: Vec<Queue>,
}

/// The event stream's hub: a [`Listener`] that fans events out to the
/// subscribers' bounded queues.
#[derive(Debug)]
pub struct Monitor {
    hub: Mutex<Hub>,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor { hub: Mutex::new(Rank::Leaf, Hub::default()) }
    }
}

impl Monitor {
    /// A monitor with no subscribers.
    pub fn new() -> Arc<Monitor> {
        Arc::new(Monitor::default())
    }

    /// A new subscriber: it receives every event published from now on.
    pub fn subscribe(self: &Arc<Monitor>) -> Result<Subscription, MonitorError> {
        let mut hub = self.hub.lock();
        if hub.queues.len() >= SUBSCRIBERS_MAX {
            return Err(MonitorError::TooMany);
        }
        hub.next_id += 1;
        let id = hub.next_id;
        let wake = Arc::new(Condvar::new());
        hub.queues.push(Queue { id, items: VecDeque::new(), events: 0, wake: wake.clone() });
        Ok(Subscription { monitor: self.clone(), id, wake })
    }

    /// How many subscribers there are now.
    pub fn subscribers(&self) -> usize {
        self.hub.lock().queues.len()
    }

    /// Numbers `what`, stamps it with the time, and appends it to every
    /// subscriber's queue (or counts it lost where a queue is full). Never
    /// waits for a subscriber.
    pub fn publish(&self, what: Happened) {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut hub = self.hub.lock();
        hub.seq += 1;
        let seq = hub.seq;
        for q in &mut hub.queues {
            if q.events < QUEUE_MAX {
                q.items.push_back(Item::Event(MonitorEvent { seq, unix_ms, what: what.clone() }));
                q.events += 1;
            } else if let Some(Item::Lost { count, last_seq }) = q.items.back_mut() {
                *count += 1;
                *last_seq = seq;
            } else {
                q.items.push_back(Item::Lost { count: 1, last_seq: seq });
            }
            q.wake.notify_one();
        }
    }

    /// Whether anyone listens (events are only described when someone does).
    fn listened(&self) -> bool {
        !self.hub.lock().queues.is_empty()
    }
}

/// One subscriber's end of the stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    monitor: Arc<Monitor>,
    id: u64,
    wake: Arc<Condvar>,
}

impl Subscription {
    /// The next event, waiting at most `timeout` for one. A run of events
    /// lost to a full queue comes as one [`Happened::Lost`] in their place.
    pub fn next(&self, timeout: Duration) -> Option<MonitorEvent> {
        let mut hub = self.monitor.hub.lock();
        let mut waited = false;
        loop {
            let q = hub.queues.iter_mut().find(|q| q.id == self.id)?;
            match q.items.pop_front() {
                Some(Item::Event(e)) => {
                    q.events -= 1;
                    return Some(e);
                }
                Some(Item::Lost { count, last_seq }) => {
                    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                    return Some(MonitorEvent { seq: last_seq, unix_ms, what: Happened::Lost { count } });
                }
                None if waited => return None,
                None => {
                    hub = self.wake.wait_timeout(hub, timeout);
                    waited = true;
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.monitor.hub.lock().queues.retain(|q| q.id != self.id);
    }
}

impl Listener for Monitor {
    fn on_event(&self, core: &Arc<Core>, event: &Event) {
        if !self.listened() {
            return;
        }
        for what in describe(core, event) {
            self.publish(what);
        }
    }
}

/// A driver instance's name.
fn name(core: &Core, id: InstanceId) -> String {
    core.inst(id).map(|i| i.name().to_owned()).unwrap_or_else(|| format!("#{}", id.0))
}

/// What the stream shows of a core event (nothing, one or two records).
pub fn describe(core: &Core, event: &Event) -> Vec<Happened> {
    match event {
        Event::DeviceAdded { path, driver, .. } => {
            vec![Happened::DeviceAdded { path: path.clone(), driver: name(core, *driver) }]
        }
        Event::BusAdded { path, driver } => {
            vec![Happened::BusAdded { path: path.clone(), driver: name(core, *driver) }]
        }
        Event::NodeRemoved { path, .. } => vec![Happened::Removed { path: path.clone() }],
        // The plugin manager answers it with an `Unbound`, which is shown.
        Event::BoundNodeRemoved { .. } => Vec::new(),
        Event::Released { ino, by } => vec![Happened::Unbound {
            path: core.tree.read().path(*ino),
            driver: name(core, *by),
            why: "released by its driver".into(),
        }],
        Event::Started { driver, pid } => vec![Happened::Started { driver: name(core, *driver), pid: *pid }],
        Event::Ready { driver, restarted: false } => vec![Happened::Ready { driver: name(core, *driver) }],
        Event::Ready { driver, restarted: true } => {
            let restarts = core.inst(*driver).map_or(0, |i| i.live.lock().restarts);
            vec![Happened::Restarted { driver: name(core, *driver), restarts }]
        }
        Event::Died { driver, how, next } => {
            let died = Happened::Died { driver: name(core, *driver), how: how.clone(), next: *next };
            match next {
                DriverState::Failed => {
                    vec![died, Happened::Quarantined { driver: name(core, *driver), how: how.clone() }]
                }
                DriverState::Starting | DriverState::Running | DriverState::Restarting | DriverState::Stopped => {
                    vec![died]
                }
            }
        }
        Event::Revived { driver } => vec![Happened::Revived { driver: name(core, *driver) }],
        Event::PermChanged { path, perm } => {
            vec![Happened::PermChanged { path: path.clone(), mode: perm.mode, uid: perm.uid, gid: perm.gid }]
        }
        Event::Bound { path, driver, .. } => vec![Happened::Bound { path: path.clone(), driver: name(core, *driver) }],
        Event::Unbound { path, driver, why, .. } => {
            vec![Happened::Unbound { path: path.clone(), driver: name(core, *driver), why: why.clone() }]
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn removed(i: usize) -> Happened {
        Happened::Removed { path: format!("n{i}") }
    }

    #[test]
    fn subscribers_get_every_event_in_order_with_numbers() {
        let m = Monitor::new();
        let a = m.subscribe().unwrap();
        let b = m.subscribe().unwrap();
        m.publish(removed(1));
        m.publish(removed(2));
        for s in [&a, &b] {
            let one = s.next(Duration::ZERO).unwrap();
            let two = s.next(Duration::ZERO).unwrap();
            assert_eq!((one.seq, one.what), (1, removed(1)));
            assert_eq!((two.seq, two.what), (2, removed(2)));
            assert!(s.next(Duration::from_millis(10)).is_none());
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_loses_events_and_is_told_how_many() {
        let m = Monitor::new();
        let slow = m.subscribe().unwrap();
        let n = QUEUE_MAX + 5;
        for i in 0..n {
            m.publish(removed(i));
        }
        // Publishing never waited; the queue kept the first QUEUE_MAX.
        for i in 0..QUEUE_MAX {
            assert_eq!(slow.next(Duration::ZERO).unwrap().what, removed(i));
        }
        let lost = slow.next(Duration::ZERO).unwrap();
        assert_eq!(lost.what, Happened::Lost { count: 5 });
        assert_eq!(lost.seq, n as u64, "the marker carries the last lost number");
        // Then the stream goes on.
        m.publish(removed(9));
        let next = slow.next(Duration::ZERO).unwrap();
        assert_eq!((next.seq, next.what), (n as u64 + 1, removed(9)));
    }

    #[test]
    fn a_slow_subscriber_does_not_hold_back_another() {
        let m = Monitor::new();
        let _slow = m.subscribe().unwrap();
        let fast = m.subscribe().unwrap();
        for i in 0..QUEUE_MAX * 2 {
            m.publish(removed(i));
            assert_eq!(fast.next(Duration::ZERO).unwrap().what, removed(i));
        }
    }

    #[test]
    fn dropping_unsubscribes_and_the_number_of_subscribers_is_bounded() {
        let m = Monitor::new();
        let all: Vec<Subscription> = (0..SUBSCRIBERS_MAX).map(|_| m.subscribe().unwrap()).collect();
        assert!(matches!(m.subscribe(), Err(MonitorError::TooMany)));
        drop(all);
        assert_eq!(m.subscribers(), 0);
        assert!(m.subscribe().is_ok());
    }

    #[test]
    fn a_waiting_subscriber_wakes_for_an_event() {
        let m = Monitor::new();
        let s = m.subscribe().unwrap();
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            m2.publish(removed(7));
        });
        assert_eq!(s.next(Duration::from_secs(10)).unwrap().what, removed(7));
        t.join().unwrap();
    }
}
