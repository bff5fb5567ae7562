//! The tree as drivers change it: buses and devices come and go, a
//! restarted driver gets its old nodes back, a bound driver takes over the
//! node its bus driver made.
//!
//! A driver is not trusted with the tree. What it may register is bounded:
//! at most its manifest's `max_devices` nodes at once, each with a name a
//! file may have (see [`crate::tree::Tree::add`]), an address and a bus
//! kind of at most [`ADDRESS_MAX`] bytes, and at most [`META_MAX`]
//! identifiers of [`META_BYTES_MAX`] bytes in all. Going over the count, a
//! bus that names itself (or a bus the driver never made) as its parent,
//! and a claim on a node not bound to it are protocol violations: the
//! driver is killed. A name or metadata that does not fit, or a name taken
//! in its bus, is refused with a logged reason and the driver goes on
//! (names may come from users: `add ../x` on the virtual bus); the first
//! refusals of an incarnation are logged, then one in a thousand, and more
//! than [`REFUSALS_MAX`] of them are a violation too.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use access_policy::{NodeKind as PolicyKind, Perm};
use ddf::proto::{BusId, DeviceClass, DeviceId, DeviceSpec};
use log::{debug, info, warn};

use super::{join, Binding, Core, Event, Instance, Link, ProtocolError, ADDRESS_MAX, META_BYTES_MAX, META_MAX};
use crate::ids::Ino;
use crate::tree::{BusDevice, DeviceRef, Node, NodeKind};

/// Refusals logged in full per incarnation before only one in a thousand is.
const REFUSALS_LOGGED: u64 = 20;

/// Refusals one incarnation may earn: past them, it is sending nonsense on
/// purpose (refused registrations cost nothing against its device limit).
pub const REFUSALS_MAX: u64 = 10_000;

/// A name for a log line: quoted and escaped, long ones cut.
fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    if name.len() <= SHOWN {
        return format!("{name:?}");
    }
    let mut cut = SHOWN;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..cut], name.len())
}

/// Why a device's description does not fit, if it does not.
fn misfit(spec: &DeviceSpec) -> Option<String> {
    if spec.address.as_ref().is_some_and(|a| a.len() > ADDRESS_MAX || a.chars().any(char::is_control)) {
        return Some(format!("its address is over {ADDRESS_MAX} bytes or has control characters"));
    }
    if spec.meta.len() > META_MAX {
        return Some(format!("{} identifiers, at most {META_MAX}", spec.meta.len()));
    }
    let bytes: usize = spec.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > META_BYTES_MAX {
        return Some(format!("{bytes} bytes of identifiers, at most {META_BYTES_MAX}"));
    }
    if spec.serves.as_ref().is_some_and(|p| p.len() > 4096) {
        return Some("the path it serves is over 4096 bytes".into());
    }
    None
}

impl Core {
    /// Logs that a registration of `inst` was refused (the first few of an
    /// incarnation, then one in a thousand); more than [`REFUSALS_MAX`] are
    /// a protocol violation.
    fn refuse(&self, inst: &Instance, what: std::fmt::Arguments<'_>) -> Result<(), ProtocolError> {
        let n = {
            let mut live = inst.live.lock();
            live.refused += 1;
            live.refused
        };
        if n <= REFUSALS_LOGGED || n % 1000 == 0 {
            let more = if n == REFUSALS_LOGGED { "; further refusals are logged one in a thousand" } else { "" };
            warn!("driver {}: {what} (refusal {n} of this incarnation){more}", inst.name());
        }
        if n > REFUSALS_MAX {
            return Err(ProtocolError::Refusals(REFUSALS_MAX));
        }
        Ok(())
    }

    /// Whether `inst` may register one more node, within its manifest's limit.
    fn within_limit(inst: &Instance) -> Result<(), ProtocolError> {
        let max = inst.manifest.max_devices;
        let live = inst.live.lock();
        if live.devices.len() + live.buses.len() >= max {
            return Err(ProtocolError::TooManyDevices(max));
        }
        Ok(())
    }

    /// Where a driver's node goes: on one of its buses, or its attach point.
    fn parent_of(&self, inst: &Instance, bus: Option<BusId>) -> Result<Ino, ProtocolError> {
        match bus {
            None => Ok(inst.attach),
            Some(b) => inst.live.lock().buses.get(&b).copied().ok_or(ProtocolError::UnknownBus(b)),
        }
    }

    pub(super) fn add_bus(
        self: &Arc<Core>,
        inst: &Instance,
        bus: BusId,
        name: String,
        kind: String,
        parent: Option<BusId>,
    ) -> Result<(), ProtocolError> {
        if parent == Some(bus) {
            return Err(ProtocolError::OwnParent(bus));
        }
        let parent = self.parent_of(inst, parent)?;
        if inst.live.lock().buses.contains_key(&bus) {
            return Err(ProtocolError::BusTwice(bus));
        }
        Self::within_limit(inst)?;
        if kind.len() > ADDRESS_MAX || kind.chars().any(char::is_control) {
            self.refuse(
                inst,
                format_args!(
                    "bus {} refused: its kind is over {ADDRESS_MAX} bytes or has control characters",
                    shown(&name)
                ),
            )?;
            return Ok(());
        }
        let path = join(&self.tree.read().path(parent), &name);
        // A restarted bus driver gets its old directory back.
        let existing = inst.live.lock().names.get(&path).copied();
        if let Some(ino) = existing {
            if matches!(self.tree.read().get(ino).map(|n| &n.kind), Some(NodeKind::Bus { .. })) {
                let mut live = inst.live.lock();
                live.buses.insert(bus, ino);
                live.seen.insert(ino);
                return Ok(());
            }
        }
        let perm = self.initial_perm(&path, None, PolicyKind::Bus);
        let kind = NodeKind::Bus { children: BTreeMap::new(), kind: Some(kind), owner: Some(inst.id) };
        let added = self.tree.write().add(parent, &name, kind, perm);
        match added {
            Ok(ino) => {
                {
                    let mut live = inst.live.lock();
                    live.buses.insert(bus, ino);
                    live.names.insert(path.clone(), ino);
                    live.seen.insert(ino);
                }
                self.inval_entry(parent, &name);
                self.emit(Event::BusAdded { path, driver: inst.id });
            }
            Err(e) => self.refuse(inst, format_args!("bus {} refused: {e}", shown(&name)))?,
        }
        Ok(())
    }

    pub(super) fn add_device(self: &Arc<Core>, inst: &Arc<Instance>, spec: DeviceSpec) -> Result<(), ProtocolError> {
        let size = if spec.class == DeviceClass::Block { spec.size } else { 0 };
        if inst.live.lock().devices.contains_key(&spec.device) {
            return Err(ProtocolError::DeviceTwice(spec.device));
        }
        Self::within_limit(inst)?;
        if let Some(why) = misfit(&spec) {
            self.refuse(inst, format_args!("device {} refused: {why}", shown(&spec.name)))?;
            return Ok(());
        }
        // A driver bound to a device takes over the node the bus made.
        if let Some(path) = &spec.serves {
            return self.serve_bound(inst, &spec, path);
        }
        let parent = self.parent_of(inst, spec.bus)?;
        let (path, bus_kind) = {
            let tree = self.tree.read();
            let kind = match tree.get(parent).map(|n| &n.kind) {
                Some(NodeKind::Bus { kind, .. }) => kind.clone().unwrap_or_default(),
                _ => String::new(),
            };
            (join(&tree.path(parent), &spec.name), kind)
        };
        let bus = spec.bus.map(|_| {
            Arc::new(BusDevice {
                provider: (inst.id, spec.device),
                class: spec.class,
                size,
                kind: bus_kind,
                address: spec.address.clone(),
                meta: spec.meta.clone(),
                offered: spec.offer,
            })
        });
        let dref = DeviceRef { instance: inst.id, device: spec.device, class: spec.class, size, bus };
        // A restarted driver registering a device it had before gets the
        // same node back (same inode, permissions, open files).
        let existing = inst.live.lock().names.get(&path).copied();
        if let Some(ino) = existing {
            let bound_elsewhere = matches!(self.bindings.lock().get(&ino), Some(Binding::Bound(i)) if *i != inst.id);
            let ok = match self.tree.write().get_mut(ino) {
                Some(n) => {
                    if let NodeKind::Device(old) = &mut n.kind {
                        if bound_elsewhere {
                            // Keep serving through the bound driver; refresh
                            // what the bus says.
                            old.bus = dref.bus.clone();
                        } else {
                            *old = dref.clone();
                        }
                    }
                    true
                }
                None => false,
            };
            let mut live = inst.live.lock();
            if ok {
                live.devices.insert(spec.device, ino);
                live.seen.insert(ino);
                return Ok(());
            }
            live.names.remove(&path);
        }
        let kind = match spec.class {
            DeviceClass::Char => PolicyKind::CharDevice,
            DeviceClass::Block => PolicyKind::BlockDevice,
        };
        let perm: Perm = self.initial_perm(&path, spec.address.as_deref(), kind);
        let offered = spec.offer && dref.bus.is_some();
        let added = self.tree.write().add(parent, &spec.name, NodeKind::Device(dref), perm);
        match added {
            Ok(ino) => {
                {
                    let mut live = inst.live.lock();
                    live.devices.insert(spec.device, ino);
                    live.names.insert(path.clone(), ino);
                    live.seen.insert(ino);
                }
                debug!("driver {}: device /{path} is inode {ino}", inst.name());
                self.inval_entry(parent, &spec.name);
                self.emit(Event::DeviceAdded { ino, path, driver: inst.id, offered });
            }
            Err(e) => self.refuse(inst, format_args!("device {} refused: {e}", shown(&spec.name)))?,
        }
        Ok(())
    }

    /// A bound driver registers the device it serves for node `path`.
    fn serve_bound(&self, inst: &Instance, spec: &DeviceSpec, path: &str) -> Result<(), ProtocolError> {
        let ino = self.tree.read().resolve(path).map(|n| n.ino);
        let Some(ino) = ino.filter(|i| self.bindings.lock().get(i) == Some(&Binding::Bound(inst.id))) else {
            return Err(ProtocolError::NotBound(path.to_owned()));
        };
        let size = if spec.class == DeviceClass::Block { spec.size } else { 0 };
        if let Some(NodeKind::Device(d)) = self.tree.write().get_mut(ino).map(|n| &mut n.kind) {
            d.instance = inst.id;
            d.device = spec.device;
            d.class = spec.class;
            d.size = size;
        }
        let mut live = inst.live.lock();
        live.devices.insert(spec.device, ino);
        live.names.insert(path.to_owned(), ino);
        live.seen.insert(ino);
        info!("driver {}: serving /{path}", inst.name());
        Ok(())
    }

    pub(super) fn remove_device(self: &Arc<Core>, inst: &Instance, device: DeviceId) {
        let ino = {
            let mut live = inst.live.lock();
            let Some(ino) = live.devices.remove(&device) else {
                drop(live);
                // Also the normal end of a device whose node went first (a
                // bound driver told to unbind a removed device).
                debug!("driver {}: removal of unknown device {device}", inst.name());
                return;
            };
            live.seen.remove(&ino);
            ino
        };
        // By its path, not by a scan: a bus driver removing all of 100,000
        // devices one by one must not pay for the other 99,999 each time.
        let path = {
            let tree = self.tree.read();
            tree.get(ino).map(|_| tree.path(ino))
        };
        {
            let mut live = inst.live.lock();
            match path {
                Some(p) if live.names.get(&p) == Some(&ino) => {
                    live.names.remove(&p);
                }
                _ => live.names.retain(|_, i| *i != ino),
            }
        }
        // A bound driver letting go of a node: its bus driver serves it again.
        let provider = match self.tree.read().get(ino).map(|n| &n.kind) {
            Some(NodeKind::Device(d)) => d.bus.as_ref().map(|b| b.provider.0).filter(|p| *p != inst.id),
            _ => None,
        };
        if provider.is_some() {
            // Unless it was taken back already (unload), its bus driver
            // serves it again.
            if self.bindings.lock().get(&ino) == Some(&Binding::Bound(inst.id)) {
                self.release_to_provider(ino, "released by its driver");
                self.emit(Event::Released { ino, by: inst.id });
            }
            return;
        }
        self.remove_node(ino);
    }

    pub(super) fn remove_bus(self: &Arc<Core>, inst: &Instance, bus: BusId) {
        let Some(ino) = inst.live.lock().buses.remove(&bus) else {
            warn!("driver {}: removal of unknown bus {bus}", inst.name());
            return;
        };
        self.remove_node(ino);
    }

    /// The bus driver serves node `ino` again (its bound driver let go, was
    /// unloaded or failed); `why` is the node's state from now on.
    pub fn release_to_provider(&self, ino: Ino, why: &str) {
        if let Some(NodeKind::Device(d)) = self.tree.write().get_mut(ino).map(|n| &mut n.kind) {
            if let Some(b) = d.bus.clone() {
                d.instance = b.provider.0;
                d.device = b.provider.1;
                d.class = b.class;
                d.size = b.size;
            }
        }
        self.bindings.lock().insert(ino, Binding::Unbound(why.to_owned()));
    }

    /// Removes a node (and what is below it): its open files answer `ENODEV`
    /// from now on, the kernel is told, and the drivers bound to removed
    /// nodes are told through [`Event::BoundNodeRemoved`].
    pub fn remove_node(self: &Arc<Core>, ino: Ino) {
        let (base, path, removed) = {
            let mut tree = self.tree.write();
            let base = tree.get(ino).map(|n| tree.path(n.parent)).unwrap_or_default();
            let path = tree.path(ino);
            (base, path, tree.remove(ino))
        };
        if removed.is_empty() {
            return;
        }
        let gone: HashSet<Ino> = removed.iter().map(|n| n.ino).collect();
        self.forget(&base, &removed, &gone);
        let unbound: Vec<(Ino, crate::ids::InstanceId)> = {
            let mut bindings = self.bindings.lock();
            removed
                .iter()
                .filter_map(|n| match bindings.remove(&n.ino) {
                    Some(Binding::Bound(b)) => Some((n.ino, b)),
                    _ => None,
                })
                .collect()
        };
        let mut failed = Vec::new();
        for f in self.files.lock().values_mut().filter(|f| gone.contains(&f.ino)) {
            if let Link::Waiting { waiters, .. } = std::mem::replace(&mut f.link, Link::Gone) {
                failed.extend(waiters);
            }
        }
        for w in failed {
            w.parked.fail(ddf::proto::Errno::ENODEV);
        }
        if let Some(n) = self.notifier.get() {
            for node in &removed {
                n.delete(node.parent, node.ino, &node.name);
            }
        }
        for (i, driver) in unbound {
            let path = join(&base, &removed_path(&removed, i));
            self.emit(Event::BoundNodeRemoved { ino: i, path, driver });
        }
        self.emit(Event::NodeRemoved { ino, path });
    }
}

/// Up to this many removed nodes are forgotten key by key; more (a whole
/// bus) by one scan of each instance's books.
const FORGET_BY_KEY: usize = 64;

impl Core {
    /// Forgets removed nodes in every instance's books. A few nodes (the
    /// common case: one device of a bus with many) are looked up by their
    /// keys, so that removing every device of a big bus one by one costs
    /// O(n), not O(n^2); a big subtree is forgotten by one scan.
    fn forget(&self, base: &str, removed: &[Node], gone: &HashSet<Ino>) {
        if removed.len() > FORGET_BY_KEY {
            for inst in self.all() {
                let mut live = inst.live.lock();
                live.names.retain(|_, i| !gone.contains(i));
                live.devices.retain(|_, i| !gone.contains(i));
                live.buses.retain(|_, i| !gone.contains(i));
                live.seen.retain(|i| !gone.contains(i));
            }
            return;
        }
        let paths: Vec<String> = removed.iter().map(|n| join(base, &removed_path(removed, n.ino))).collect();
        // The driver numbers a removed device had: its server's, and its
        // bus driver's when another driver was bound to it.
        let mut numbers: Vec<(crate::ids::InstanceId, DeviceId)> = Vec::new();
        for n in removed {
            if let NodeKind::Device(d) = &n.kind {
                numbers.push((d.instance, d.device));
                if let Some(b) = &d.bus {
                    numbers.push(b.provider);
                }
            }
        }
        for inst in self.all() {
            let mut live = inst.live.lock();
            for p in &paths {
                if live.names.get(p).is_some_and(|i| gone.contains(i)) {
                    live.names.remove(p);
                }
            }
            for (owner, dev) in &numbers {
                if *owner == inst.id && live.devices.get(dev).is_some_and(|i| gone.contains(i)) {
                    live.devices.remove(dev);
                }
            }
            // An instance has few buses.
            live.buses.retain(|_, i| !gone.contains(i));
            for i in gone {
                live.seen.remove(i);
            }
        }
    }
}

/// The path a removed node had (from the removed set, which holds its
/// ancestors up to the removed subtree's root).
fn removed_path(removed: &[Node], ino: Ino) -> String {
    let mut parts = Vec::new();
    let mut cur = removed.iter().find(|n| n.ino == ino);
    while let Some(n) = cur {
        parts.push(n.name.clone());
        cur = removed.iter().find(|p| p.ino == n.parent && p.ino != n.ino);
    }
    parts.reverse();
    parts.join("/")
}
