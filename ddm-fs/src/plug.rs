//! The plugin manager: matches devices that bus drivers report to driver
//! manifests, starts (or hands the device to) the matching driver, and lets
//! go when the device goes. Also `ddmctl load`, `unload`, `rescan` and
//! `find`.
//!
//! Matching is data: a manifest's `[match]` table names the kind of bus and
//! glob patterns on the device's identifiers (see [`crate::manifest::Match`]).
//! The first manifest in the catalog that matches wins. A matching driver
//! runs as one instance (named like its manifest) that serves every device
//! it is handed: it is started on the first, told of each one with
//! [`DdmToDriver::Bind`], told of their going with [`DdmToDriver::Unbind`],
//! and stopped when it has none left (unless it starts with ddm).
//!
//! A device no manifest matches stays in the tree, served by its bus driver,
//! with the reason as its state (`unbound: no driver matches pci 1af4:1045`).
//!
//! The plugin manager learns what happens in the tree from the core's
//! events ([`PlugManager`] is a [`Listener`]): a device offered, a driver
//! ready, a bound node removed, a driver quarantined or revived.

use std::sync::Arc;

use ddf::proto::{BoundDevice, DdmToDriver, DriverState, NodeInfo, Query};
use log::{debug, info, warn};

use crate::core::{Binding, Cause, Core, Event, Instance, Listener, Request};
use crate::ids::{Ino, InstanceId, ROOT};
use crate::tree::{BusDevice, NodeKind};

/// The plugin manager, as a listener of the core's events.
#[derive(Debug, Default)]
pub struct PlugManager;

impl Listener for PlugManager {
    fn on_event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::DeviceAdded { ino, offered: true, .. } => plug(core, *ino),
            Event::Ready { driver, .. } => {
                // Devices the plugin manager handed it (again, after a restart).
                if let Some(inst) = core.inst(*driver) {
                    bind_all(core, &inst);
                }
            }
            Event::BoundNodeRemoved { ino, path, driver } => unbind_driver(core, *driver, *ino, path, "removed"),
            Event::Died { driver, how, next: DriverState::Failed } => {
                // Devices it was handed go back to their bus drivers, with the reason.
                if let Some(inst) = core.inst(*driver) {
                    release_all(core, *driver, &format!("driver {} failed ({how})", inst.name()));
                }
            }
            Event::Revived { .. } => replug(core),
            Event::DeviceAdded { .. }
            | Event::BusAdded { .. }
            | Event::NodeRemoved { .. }
            | Event::Released { .. }
            | Event::Started { .. }
            | Event::Died { .. }
            | Event::PermChanged { .. }
            | Event::Bound { .. }
            | Event::Unbound { .. } => {}
        }
    }
}

/// `vendor:device` without `0x`, or the address, for messages.
fn describe(dev: &BusDevice) -> String {
    let strip = |s: &str| s.trim_start_matches("0x").to_owned();
    match (dev.meta("vendor"), dev.meta("device")) {
        (Some(v), Some(d)) => format!("{}:{}", strip(v), strip(d)),
        _ => dev.address.clone().unwrap_or_default(),
    }
}

/// The bus facts of device node `ino`, and its path and name.
fn bus_device(core: &Core, ino: Ino) -> Option<(String, String, Arc<BusDevice>)> {
    let tree = core.tree.read();
    let n = tree.get(ino)?;
    match &n.kind {
        NodeKind::Device(d) => Some((tree.path(ino), n.name.clone(), d.bus.clone()?)),
        NodeKind::Bus { .. } => None,
    }
}

/// Offers a device node to the drivers' manifests.
pub fn plug(core: &Arc<Core>, ino: Ino) {
    let Some((path, _, dev)) = bus_device(core, ino) else { return };
    if !dev.offered {
        return;
    }
    let found = core
        .catalog
        .iter()
        .find(|m| m.matches.as_ref().is_some_and(|mm| mm.matches(&dev.kind, dev.class.as_str(), &dev.meta)));
    let Some(manifest) = found else {
        let why = format!("no driver matches {} {}", dev.kind, describe(&dev));
        debug!("/{path}: unbound: {why}");
        core.bindings.lock().insert(ino, Binding::Unbound(why));
        return;
    };
    let inst = match core.instance(&manifest.name) {
        Some(i) => i,
        None => core.add_instance(manifest.clone(), ROOT),
    };
    core.bindings.lock().insert(ino, Binding::Bound(inst.id));
    info!("/{path}: {} {} matches driver {}", dev.kind, describe(&dev), inst.name());
    core.emit(Event::Bound { ino, path, driver: inst.id });
    match inst.state() {
        DriverState::Running => send_bind(core, &inst, ino),
        // Told when it is ready (see `bind_all`).
        DriverState::Starting | DriverState::Restarting => {}
        DriverState::Stopped | DriverState::Failed => {
            if let Err(e) = core.start(&inst) {
                warn!("driver {}: {}", inst.name(), ddf::error_chain(&e));
            }
        }
    }
}

/// Hands node `ino` to `inst`.
fn send_bind(core: &Core, inst: &Instance, ino: Ino) {
    let Some((path, name, dev)) = bus_device(core, ino) else { return };
    let Some(conn) = inst.conn() else { return };
    let msg = DdmToDriver::Bind(BoundDevice {
        path,
        name,
        bus_kind: dev.kind.clone(),
        address: dev.address.clone(),
        meta: dev.meta.clone(),
    });
    if let Err(e) = conn.send(&msg, &[]) {
        warn!("driver {}: bind: {e}", inst.name());
    }
}

/// The nodes bound to driver `id`.
fn bound_to(core: &Core, id: InstanceId) -> Vec<Ino> {
    core.bindings.lock().iter().filter(|(_, b)| **b == Binding::Bound(id)).map(|(i, _)| *i).collect()
}

/// Hands `inst` (just ready) every node bound to it: after a start, and
/// after a restart, when the new incarnation must take them up again.
fn bind_all(core: &Core, inst: &Instance) {
    for ino in bound_to(core, inst.id) {
        send_bind(core, inst, ino);
    }
}

/// Tells driver `id` that node `ino` at `path` is no longer its (`why`),
/// and stops it if it serves nothing else (and was started for devices).
fn unbind_driver(core: &Arc<Core>, id: InstanceId, ino: Ino, path: &str, why: &str) {
    let Some(inst) = core.inst(id) else { return };
    core.emit(Event::Unbound { ino, path: path.to_owned(), driver: id, why: why.to_owned() });
    if let Some(conn) = inst.conn() {
        let _ = conn.send(&DdmToDriver::Unbind { path: path.to_owned() }, &[]);
    }
    if bound_to(core, id).is_empty() && !inst.manifest.autostart {
        info!("driver {}: serves nothing any more; stopping it", inst.name());
        stop(&inst);
    }
}

/// Stops an instance for good (until loaded or matched again).
fn stop(inst: &Instance) {
    let conn = {
        let mut live = inst.live.lock();
        live.kill_reason = Some(Cause::Requested(Request::Stop));
        live.conn.clone()
    };
    if let Some(c) = conn {
        let _ = c.send(&DdmToDriver::Shutdown, &[]);
    }
}

/// Every node bound to driver `id` goes back to its bus driver (the driver
/// failed for good), with `why` as its state.
fn release_all(core: &Arc<Core>, id: InstanceId, why: &str) {
    for ino in bound_to(core, id) {
        core.release_to_provider(ino, why);
        let path = core.tree.read().path(ino);
        core.emit(Event::Unbound { ino, path, driver: id, why: why.to_owned() });
    }
}

/// Why a `ddmctl load`, `unload` or `rescan` was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    /// No manifest of that name.
    #[error("no driver named {0:?} is known (built in, or given with --manifest)")]
    NoDriver(String),
    /// No node at that path.
    #[error("no node /{0}")]
    NoNode(String),
    /// A bus was named, a device given.
    #[error("/{0} is a device, not a bus")]
    NotABus(String),
    /// A bus no driver enumerates.
    #[error("/{0} is not a bus a driver enumerates")]
    NotEnumerated(String),
    /// A node without a driver.
    #[error("/{0} has no driver to unload")]
    NoDriverFor(String),
    /// The driver could not be started.
    #[error("driver {0}")]
    Start(String, #[source] crate::core::SpawnError),
    /// It was started but is not running (it refused to start, or died).
    #[error("driver {name} did not start: {state}{}", last_exit.as_ref().map(|e| format!(", {e}")).unwrap_or_default())]
    NotRunning {
        /// The instance.
        name: String,
        /// Its state now.
        state: &'static str,
        /// How its last incarnation ended.
        last_exit: Option<String>,
    },
}

/// `ddmctl load DRIVER [--bus BUS] [KEY=VALUE...]`: a new instance of a
/// known driver, its plain devices on `bus`. Waits for it to be ready, at
/// most the start timeout.
pub fn load(
    core: &Arc<Core>,
    driver: &str,
    bus: Option<&str>,
    params: &[(String, String)],
) -> Result<String, PlugError> {
    let mut manifest =
        core.catalog.iter().find(|m| m.name == driver).cloned().ok_or_else(|| PlugError::NoDriver(driver.into()))?;
    let attach = match bus {
        None => ROOT,
        Some(b) => {
            let tree = core.tree.read();
            match tree.resolve(b).map(|n| (n.ino, &n.kind)) {
                Some((ino, NodeKind::Bus { .. })) => ino,
                Some(_) => return Err(PlugError::NotABus(b.into())),
                None => return Err(PlugError::NoNode(b.into())),
            }
        }
    };
    // A second instance of the same driver gets a new name.
    let taken = |n: &str| core.instance(n).is_some_and(|i| i.state() != DriverState::Stopped);
    if taken(&manifest.name) {
        let base = manifest.name.clone();
        let n = (2..).find(|k| !taken(&format!("{base}-{k}"))).unwrap_or(2);
        manifest.name = format!("{base}-{n}");
    }
    for (k, v) in params {
        manifest.params.insert(k.clone(), toml::Value::String(v.clone()));
    }
    let name = manifest.name.clone();
    let inst = match core.instance(&name) {
        Some(i) if i.state() == DriverState::Stopped && params.is_empty() && bus.is_none() => i,
        _ => core.add_instance(manifest, attach),
    };
    core.start(&inst).map_err(|e| PlugError::Start(name.clone(), e))?;
    match inst.wait_ready(core.config.start_timeout) {
        DriverState::Running => Ok(format!("{name}: running")),
        state => {
            Err(PlugError::NotRunning { name, state: state.as_str(), last_exit: inst.live.lock().last_exit.clone() })
        }
    }
}

/// `ddmctl unload NODE`: a bound device goes back to its bus driver; any
/// other node's driver is stopped and its nodes removed.
pub fn unload(core: &Arc<Core>, path: &str) -> Result<String, PlugError> {
    let path = path.trim_matches('/');
    let (ino, owner) = {
        let tree = core.tree.read();
        let n = tree.resolve(path).ok_or_else(|| PlugError::NoNode(path.into()))?;
        let owner = match &n.kind {
            NodeKind::Device(d) => Some(d.instance),
            NodeKind::Bus { owner, .. } => *owner,
        };
        (n.ino, owner)
    };
    let binding = core.bindings.lock().get(&ino).cloned();
    if let Some(Binding::Bound(b)) = binding {
        core.release_to_provider(ino, "unloaded");
        unbind_driver(core, b, ino, path, "unloaded");
        let name = core.inst(b).map(|i| i.name().to_owned()).unwrap_or_default();
        return Ok(format!("/{path}: unbound from {name}"));
    }
    let inst = owner.and_then(|o| core.inst(o)).ok_or_else(|| PlugError::NoDriverFor(path.into()))?;
    stop(&inst);
    if inst.live.lock().pid.is_none() {
        // No process to stop (quarantined, or waiting to restart): its DMA
        // memory goes now; a running one's goes when it has stopped.
        inst.free_dma();
    }
    let nodes: Vec<Ino> = inst.live.lock().names.values().copied().collect();
    for n in nodes {
        core.remove_node(n);
    }
    Ok(format!("{}: stopped", inst.name()))
}

/// `ddmctl rescan [BUS]`: bus drivers enumerate again; unbound devices are
/// offered to the manifests again.
pub fn rescan(core: &Arc<Core>, bus: Option<&str>) -> Result<String, PlugError> {
    let owners: Vec<InstanceId> = {
        let tree = core.tree.read();
        match bus {
            Some(b) => match tree.resolve(b.trim_matches('/')).map(|n| &n.kind) {
                Some(NodeKind::Bus { owner: Some(o), .. }) => vec![*o],
                Some(_) => return Err(PlugError::NotEnumerated(b.trim_matches('/').into())),
                None => return Err(PlugError::NoNode(b.trim_matches('/').into())),
            },
            None => tree
                .walk()
                .into_iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::Bus { owner, .. } => *owner,
                    NodeKind::Device(_) => None,
                })
                .collect(),
        }
    };
    let mut told: Vec<String> = Vec::new();
    for o in owners {
        let Some(inst) = core.inst(o) else { continue };
        let Some(conn) = inst.conn() else { continue };
        let _ = conn.send(&DdmToDriver::Rescan, &[]);
        if !told.iter().any(|t| t == inst.name()) {
            told.push(inst.name().to_owned());
        }
    }
    replug(core);
    Ok(format!("rescan sent to {}", if told.is_empty() { "no bus driver".into() } else { told.join(", ") }))
}

/// Offers every unbound device to the manifests again.
pub fn replug(core: &Arc<Core>) {
    let unbound: Vec<Ino> =
        core.bindings.lock().iter().filter(|(_, b)| matches!(b, Binding::Unbound(_))).map(|(i, _)| *i).collect();
    for ino in unbound {
        plug(core, ino);
    }
}

/// The state a node shows: its driver's, or why it has none.
pub fn node_state(core: &Core, ino: Ino, driver_state: Option<DriverState>) -> Option<String> {
    match core.bindings.lock().get(&ino) {
        Some(Binding::Unbound(why)) => Some(format!("unbound: {why}")),
        Some(Binding::Bound(_)) | None => driver_state.map(|s| s.as_str().to_owned()),
    }
}

/// Whether node `n` answers `q`.
pub fn matches_query(q: &Query, n: &NodeInfo) -> bool {
    let glob = crate::manifest::glob;
    if let Some(b) = &q.bus {
        // Nodes on a bus of that kind (not the bus directory itself), or in
        // the bus directory of that path.
        let on_bus = (n.class.is_some() && n.bus.as_deref() == Some(b.as_str()))
            || n.path.rsplit_once('/').is_some_and(|(dir, _)| dir == b.trim_matches('/'));
        if !on_bus {
            return false;
        }
    }
    if let Some(c) = &q.class {
        if n.class.map(|c| c.as_str()) != Some(c.as_str()) && !(c == "bus" && n.class.is_none()) {
            return false;
        }
    }
    if let Some(p) = &q.name {
        let name = n.path.rsplit('/').next().unwrap_or(&n.path);
        if !glob(p, name) {
            return false;
        }
    }
    if let Some(d) = &q.driver {
        if !n.driver.as_deref().is_some_and(|x| glob(d, x)) {
            return false;
        }
    }
    if let Some(s) = &q.state {
        let state = n.state_text.as_deref().unwrap_or("");
        if !(state == s || state.starts_with(&format!("{s}:")) || glob(s, state)) {
            return false;
        }
    }
    true
}
