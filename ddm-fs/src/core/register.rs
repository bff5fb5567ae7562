//! The tree as drivers change it: buses and devices come and go, a
//! restarted driver gets its old nodes back, a bound driver takes over the
//! node its bus driver made.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use access_policy::{NodeKind as PolicyKind, Perm};
use ddf::proto::{BusId, DeviceClass, DeviceId, DeviceSpec};
use log::{debug, info, warn};

use super::{join, Binding, Core, Event, Instance, Link, ProtocolError, DEVICES_MAX};
use crate::ids::Ino;
use crate::tree::{BusDevice, DeviceRef, Node, NodeKind};

impl Core {
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
        let parent = self.parent_of(inst, parent)?;
        if inst.live.lock().buses.contains_key(&bus) {
            return Err(ProtocolError::BusTwice(bus));
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
            Err(e) => warn!("driver {}: bus {name:?} refused: {e}", inst.name()),
        }
        Ok(())
    }

    pub(super) fn add_device(self: &Arc<Core>, inst: &Arc<Instance>, spec: DeviceSpec) -> Result<(), ProtocolError> {
        let size = if spec.class == DeviceClass::Block { spec.size } else { 0 };
        {
            let live = inst.live.lock();
            if live.devices.len() >= DEVICES_MAX {
                return Err(ProtocolError::TooManyDevices(DEVICES_MAX));
            }
            if live.devices.contains_key(&spec.device) {
                return Err(ProtocolError::DeviceTwice(spec.device));
            }
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
            Err(e) => warn!("driver {}: device {:?} refused: {e}", inst.name(), spec.name),
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
            live.names.retain(|_, i| *i != ino);
            live.seen.remove(&ino);
            ino
        };
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
        // Forget the nodes in every instance's books.
        for inst in self.all() {
            let mut live = inst.live.lock();
            live.names.retain(|_, i| !gone.contains(i));
            live.devices.retain(|_, i| !gone.contains(i));
            live.buses.retain(|_, i| !gone.contains(i));
            live.seen.retain(|i| !gone.contains(i));
        }
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
