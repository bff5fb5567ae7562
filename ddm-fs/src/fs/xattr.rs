//! The extended attributes of a node: `user.ddf.*` say what the DDM knows
//! (driver, pid, state, restarts, bus address and identifiers), and
//! `system.posix_acl_access` is the node's ACL.

use crate::core::Core;
use crate::ids::{Ino, InstanceId};
use crate::sync::{Mutex, Rank};
use crate::tree::{DeviceRef, NodeKind};

/// `user.ddf.*` names the DDM itself gives; a bus's identifiers may not
/// shadow them.
const RESERVED: &[&str] = &[
    "path",
    "kind",
    "class",
    "driver",
    "state",
    "pid",
    "restarts",
    "last_exit",
    "bus",
    "address",
    "dma_bytes",
    "dma_page_size",
    "dma_segments",
    "dma_pinned",
];

/// A node's kind without its children.
#[derive(Debug)]
enum Facts {
    Bus { kind: Option<String>, owner: Option<InstanceId> },
    Device(DeviceRef),
}

/// What the extended attributes of node `ino` are made from.
fn facts(core: &Core, ino: Ino) -> Option<(String, Facts)> {
    let tree = core.tree.read();
    let n = tree.get(ino)?;
    let facts = match &n.kind {
        NodeKind::Bus { kind, owner, .. } => Facts::Bus { kind: kind.clone(), owner: *owner },
        NodeKind::Device(d) => Facts::Device(d.clone()),
    };
    Some((tree.path(ino), facts))
}

/// The `user.ddf.*` attributes of a node, in listing order.
pub fn xattrs(core: &Core, ino: Ino) -> Option<Vec<(&'static str, String)>> {
    let (path, facts) = facts(core, ino)?;
    let mut v = Vec::new();
    v.push(("user.ddf.path", format!("/{path}")));
    match &facts {
        Facts::Bus { kind, owner } => {
            v.push(("user.ddf.kind", "bus".into()));
            if let Some(k) = kind {
                v.push(("user.ddf.bus", k.clone()));
            }
            if let Some(inst) = owner.and_then(|o| core.inst(o)) {
                v.push(("user.ddf.driver", inst.name().to_owned()));
            }
        }
        Facts::Device(d) => {
            v.push(("user.ddf.kind", "device".into()));
            v.push(("user.ddf.class", d.class.as_str().into()));
            if let Some(inst) = core.inst(d.instance) {
                let (state, pid, restarts, last_exit) = {
                    let live = inst.live.lock();
                    (live.state, live.pid, live.restarts, live.last_exit.clone())
                };
                let state = crate::plug::node_state(core, ino, Some(state)).unwrap_or_default();
                v.push(("user.ddf.driver", inst.name().to_owned()));
                v.push(("user.ddf.state", state));
                v.push(("user.ddf.pid", pid.map(|p| p.to_string()).unwrap_or_default()));
                v.push(("user.ddf.restarts", restarts.to_string()));
                v.push(("user.ddf.last_exit", last_exit.unwrap_or_default()));
                // Its DMA memory, without the addresses (privileged: the
                // driver's alone).
                let dma = inst.dma.lock().as_ref().map(|r| r.status());
                if let Some(d) = dma {
                    v.push(("user.ddf.dma_bytes", d.bytes.to_string()));
                    v.push(("user.ddf.dma_page_size", d.page_size.to_string()));
                    v.push(("user.ddf.dma_segments", d.segments.to_string()));
                    v.push(("user.ddf.dma_pinned", if d.pinned { "yes" } else { "no" }.into()));
                }
            }
            if let Some(b) = &d.bus {
                v.push(("user.ddf.bus", b.kind.clone()));
                if let Some(a) = &b.address {
                    v.push(("user.ddf.address", a.clone()));
                }
                for (k, val) in &b.meta {
                    // Only names that cannot shadow the DDM's own.
                    if !RESERVED.contains(&k.as_str()) && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                        v.push((interned(k), val.clone()));
                    }
                }
            }
        }
    }
    Some(v)
}

/// `user.ddf.<key>` as a `&'static str`. The set of identifier keys is small
/// and fixed per bus (vendor, device, irq, ...), so each name is interned
/// once and kept; past 256 names, the others share one.
fn interned(key: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Rank::Leaf, Vec::new());
    let mut names = NAMES.lock();
    let full = format!("user.ddf.{key}");
    if let Some(n) = names.iter().find(|n| **n == full) {
        return n;
    }
    if names.len() >= 256 {
        return "user.ddf.other";
    }
    let leaked: &'static str = Box::leak(full.into_boxed_str());
    names.push(leaked);
    leaked
}

/// Answers a getxattr/listxattr: the size when asked for it, the bytes when
/// they fit, `ERANGE` when they do not.
pub fn reply(reply: fuser::ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
