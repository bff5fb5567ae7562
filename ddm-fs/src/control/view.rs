//! What the control socket shows: the tree, a node's whole story, every
//! driver's status, built from the core's books for [`super`]'s answers.

use ddf::proto::{DriverStatus, NodeDetail, NodeInfo};

use crate::core::{Binding, Core};
use crate::ids::Ino;
use crate::tree::NodeKind;

/// The tree as the control socket shows it.
pub fn tree(core: &Core) -> Vec<NodeInfo> {
    let nodes: Vec<(Ino, String, NodeKind, access_policy::Perm)> = {
        let tree = core.tree.read();
        tree.walk().into_iter().map(|n| (n.ino, tree.path(n.ino), n.kind.clone(), n.perm)).collect()
    };
    nodes.into_iter().map(|(ino, path, kind, perm)| node_info(core, ino, path, kind, perm)).collect()
}

/// One node as the control socket shows it (taken with no lock held).
fn node_info(core: &Core, ino: Ino, path: String, kind: NodeKind, perm: access_policy::Perm) -> NodeInfo {
    let mut info = NodeInfo {
        path,
        class: None,
        driver: None,
        pid: None,
        state: None,
        mode: perm.mode,
        uid: perm.uid,
        gid: perm.gid,
        size: 0,
        bus: None,
        address: None,
        meta: Vec::new(),
        state_text: None,
    };
    match kind {
        NodeKind::Bus { kind, owner, .. } => {
            info.bus = kind;
            if let Some(inst) = owner.and_then(|o| core.inst(o)) {
                let l = inst.live.lock();
                info.driver = Some(inst.name().to_owned());
                info.pid = l.pid;
                info.state = Some(l.state);
                info.state_text = Some(l.state.as_str().to_owned());
            }
        }
        NodeKind::Device(d) => {
            info.class = Some(d.class);
            info.size = d.size;
            if let Some(inst) = core.inst(d.instance) {
                let (pid, state) = {
                    let l = inst.live.lock();
                    (l.pid, l.state)
                };
                info.driver = Some(inst.name().to_owned());
                info.pid = pid;
                info.state = Some(state);
                info.state_text = crate::plug::node_state(core, ino, Some(state));
            }
            if let Some(b) = d.bus {
                info.bus = Some(b.kind.clone());
                info.address = b.address.clone();
                info.meta = b.meta.clone();
            }
        }
    }
    info
}

/// Every driver instance.
pub fn status(core: &Core) -> Vec<DriverStatus> {
    core.all()
        .iter()
        .map(|inst| {
            let mut devices = core.device_paths(inst);
            let device_count = devices.len() as u64;
            devices.truncate(ddf::proto::STATUS_DEVICES_MAX);
            let dma = inst.dma.lock().as_ref().map(|r| r.status());
            let live = inst.live.lock();
            let now = std::time::Instant::now();
            let next_try_ms = (live.state == ddf::proto::DriverState::Failed)
                .then_some(live.health.retry_at)
                .flatten()
                .map(|t| t.saturating_duration_since(now).as_millis() as u64);
            DriverStatus {
                name: inst.name().to_owned(),
                exec: inst.exec.display().to_string(),
                pid: live.pid,
                state: live.state,
                last_exit: live.last_exit.clone(),
                requests: inst.requests.load(std::sync::atomic::Ordering::Relaxed),
                errors: inst.errors.load(std::sync::atomic::Ordering::Relaxed),
                restarts: live.restarts,
                devices,
                counters: inst.counters.lock().iter().map(|(k, v)| (k.clone(), *v)).collect(),
                fast_calls: live.conn.as_ref().map_or(0, |c| c.fast_calls()),
                dma,
                violations: live.violations,
                next_try_ms,
                quarantines: live.health.quarantines,
                device_count,
            }
        })
        .collect()
}

/// Everything known of the node at `path` (below the mount), or `None`.
pub fn node(core: &Core, path: &str) -> Option<NodeDetail> {
    let path = path.trim_matches('/');
    let (ino, kind, perm) = {
        let tree = core.tree.read();
        let n = tree.resolve(path)?;
        (n.ino, n.kind.clone(), n.perm)
    };
    let info = node_info(core, ino, path.to_owned(), kind.clone(), perm);
    let (driver, bus_driver) = match &kind {
        NodeKind::Device(d) => {
            let provider = d.bus.as_ref().map(|b| b.provider.0).filter(|p| *p != d.instance);
            (core.inst(d.instance), provider.and_then(|p| core.inst(p)))
        }
        NodeKind::Bus { owner, .. } => (owner.and_then(|o| core.inst(o)), None),
    };
    let (restarts, last_exit) = match &driver {
        Some(inst) => {
            let live = inst.live.lock();
            (Some(live.restarts), live.last_exit.clone())
        }
        None => (None, None),
    };
    let unbound = match core.bindings.lock().get(&ino) {
        Some(Binding::Unbound(why)) => Some(why.clone()),
        Some(Binding::Bound(_)) | None => None,
    };
    Some(NodeDetail {
        node: info,
        acl: core.acl(ino).and_then(|a| acl_text(&a)),
        bus_driver: bus_driver.map(|i| i.name().to_owned()),
        unbound,
        restarts,
        last_exit,
    })
}

/// An access ACL (`system.posix_acl_access` bytes) in `getfacl`'s short
/// form, `user::rw-,user:1000:r--,group::r--,mask::r--,other::---`; `None`
/// if it is malformed.
pub fn acl_text(acl: &[u8]) -> Option<String> {
    let body = acl.get(4..)?;
    if acl[..4] != 2u32.to_le_bytes() || body.len() % 8 != 0 {
        return None;
    }
    let mut out = Vec::new();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let who = match tag {
            0x01 => "user:".to_owned(),
            0x02 => format!("user:{id}"),
            0x04 => "group:".to_owned(),
            0x08 => format!("group:{id}"),
            0x10 => "mask:".to_owned(),
            0x20 => "other:".to_owned(),
            _ => return None,
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        out.push(format!("{who}:{}{}{}", bit(4, 'r'), bit(2, 'w'), bit(1, 'x')));
    }
    Some(out.join(","))
}
