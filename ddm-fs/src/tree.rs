//! The device tree: buses are directories, devices are files.
//!
//! The root is the paper's *null bus*. Every node has an inode number that is
//! never reused while `ddm` runs (so the FUSE generation can stay 0), a name,
//! its parent, and owner/group/mode from the access policy. A device node
//! knows which driver instance serves it and the driver's own number for it.
//!
//! The tree is plain data behind one lock in [`crate::core::Core`]; it
//! never calls out (no FUSE notifications, no driver calls) while borrowed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use access_policy::Perm;
use ddf::proto::{DeviceClass, DeviceId};

use crate::ids::InstanceId;
pub use crate::ids::{Ino, ROOT};

/// What a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A bus (directory) and its children by name.
    Bus {
        /// Children, sorted by name (readdir order).
        children: BTreeMap<String, Ino>,
        /// The kind of bus (`pci`, `vbus`); `None` for the null bus.
        kind: Option<String>,
        /// The driver instance that enumerates it.
        owner: Option<InstanceId>,
    },
    /// A device (file).
    Device(DeviceRef),
}

/// Which driver serves a device node.
#[derive(Debug, Clone)]
pub struct DeviceRef {
    /// The driver instance.
    pub instance: InstanceId,
    /// The driver's number for the device.
    pub device: DeviceId,
    /// Char or block.
    pub class: DeviceClass,
    /// Size in bytes (block devices).
    pub size: u64,
    /// For a device a bus driver reported: what it said.
    pub bus: Option<Arc<BusDevice>>,
}

/// A device as its bus driver reported it. The bus driver serves the node
/// until a driver bound to it takes over, and again after that one lets go.
#[derive(Debug, Clone)]
pub struct BusDevice {
    /// The bus driver's instance and its number for the device.
    pub provider: (InstanceId, DeviceId),
    /// The provider's class and size for it.
    pub class: DeviceClass,
    /// Size in bytes.
    pub size: u64,
    /// The kind of bus (`pci`, `vbus`).
    pub kind: String,
    /// Address on the bus.
    pub address: Option<String>,
    /// Identifiers and resources.
    pub meta: Vec<(String, String)>,
    /// Offered to the plugin manager.
    pub offered: bool,
}

impl BusDevice {
    /// The value of identifier `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number.
    pub ino: Ino,
    /// Parent's inode (the root is its own parent).
    pub parent: Ino,
    /// Name in the parent.
    pub name: String,
    /// Bus or device.
    pub kind: NodeKind,
    /// Owner, group, mode.
    pub perm: Perm,
    /// When it appeared (all three times).
    pub born: SystemTime,
    /// Last change of owner, group or mode.
    pub ctime: SystemTime,
}

/// Why a tree change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// The name cannot be a file name.
    #[error("invalid node name {0:?}")]
    BadName(String),
    /// The name is taken in that bus.
    #[error("{0:?} already exists")]
    Exists(String),
    /// The parent is not a bus or does not exist.
    #[error("no bus with inode {0}")]
    NoBus(Ino),
}

/// The whole tree.
#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next_ino: u64,
}

impl Tree {
    /// A tree holding only the null bus.
    pub fn new(root_perm: Perm) -> Tree {
        let now = SystemTime::now();
        let root = Node {
            ino: ROOT,
            parent: ROOT,
            name: String::new(),
            kind: NodeKind::Bus { children: BTreeMap::new(), kind: None, owner: None },
            perm: root_perm,
            born: now,
            ctime: now,
        };
        Tree { nodes: HashMap::from([(ROOT, root)]), next_ino: ROOT.0 + 1 }
    }

    /// The node with inode `ino`.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// Mutable access to a node.
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The child `name` of bus `parent`.
    pub fn lookup(&self, parent: Ino, name: &str) -> Option<&Node> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Bus { children, .. } => children.get(name).and_then(|i| self.nodes.get(i)),
            NodeKind::Device(_) => None,
        }
    }

    /// Children of a bus in name order; empty for a device.
    pub fn children(&self, ino: Ino) -> Vec<&Node> {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(NodeKind::Bus { children, .. }) => children.values().filter_map(|i| self.nodes.get(i)).collect(),
            _ => Vec::new(),
        }
    }

    /// The path of a node below the mount root, without a leading `/`
    /// (`""` for the root, `pci/0000:00:03.0` for a device on a bus).
    pub fn path(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let Some(n) = self.nodes.get(&cur) else { break };
            parts.push(n.name.as_str());
            cur = n.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Adds a node under bus `parent`.
    pub fn add(&mut self, parent: Ino, name: &str, kind: NodeKind, perm: Perm) -> Result<Ino, TreeError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
            || name.len() > 255
        {
            return Err(TreeError::BadName(name.to_owned()));
        }
        let ino = Ino(self.next_ino);
        match self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
            Some(NodeKind::Bus { children, .. }) => {
                if children.contains_key(name) {
                    return Err(TreeError::Exists(name.to_owned()));
                }
                children.insert(name.to_owned(), ino);
            }
            _ => return Err(TreeError::NoBus(parent)),
        }
        self.next_ino += 1;
        let now = SystemTime::now();
        self.nodes.insert(ino, Node { ino, parent, name: name.to_owned(), kind, perm, born: now, ctime: now });
        Ok(ino)
    }

    /// Removes a node and everything below it; returns the removed nodes.
    pub fn remove(&mut self, ino: Ino) -> Vec<Node> {
        if ino == ROOT {
            return Vec::new();
        }
        let Some(node) = self.nodes.remove(&ino) else {
            return Vec::new();
        };
        if let Some(NodeKind::Bus { children, .. }) = self.nodes.get_mut(&node.parent).map(|p| &mut p.kind) {
            children.remove(&node.name);
        }
        let mut out = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if let NodeKind::Bus { children, .. } = &n.kind {
                for c in children.values() {
                    if let Some(child) = self.nodes.remove(c) {
                        stack.push(child);
                    }
                }
            }
            out.push(n);
        }
        out
    }

    /// The node at `path` below the root (`""` is the root).
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let mut cur = self.nodes.get(&ROOT)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = self.lookup(cur.ino, part)?;
        }
        Some(cur)
    }

    /// Every node, parents before children, siblings by name.
    pub fn walk(&self) -> Vec<&Node> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![ROOT];
        while let Some(i) = stack.pop() {
            let Some(n) = self.nodes.get(&i) else { continue };
            out.push(n);
            if let NodeKind::Bus { children, .. } = &n.kind {
                stack.extend(children.values().rev());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn perm() -> Perm {
        Perm { uid: 0, gid: 0, mode: 0o755 }
    }

    fn dev() -> NodeKind {
        NodeKind::Device(DeviceRef {
            instance: InstanceId(0),
            device: DeviceId(0),
            class: DeviceClass::Char,
            size: 0,
            bus: None,
        })
    }

    fn bus() -> NodeKind {
        NodeKind::Bus { children: BTreeMap::new(), kind: Some("pci".into()), owner: Some(InstanceId(0)) }
    }

    #[test]
    fn add_lookup_path_remove() {
        let mut t = Tree::new(perm());
        let bus = t.add(ROOT, "pci", bus(), perm()).unwrap();
        let d = t.add(bus, "0000:00:03.0", dev(), perm()).unwrap();
        assert_eq!(t.path(d), "pci/0000:00:03.0");
        assert_eq!(t.resolve("pci/0000:00:03.0").unwrap().ino, d);
        assert_eq!(t.resolve("").unwrap().ino, ROOT);
        assert!(t.resolve("pci/nope").is_none());
        assert_eq!(t.lookup(bus, "0000:00:03.0").unwrap().ino, d);
        assert_eq!(t.add(bus, "0000:00:03.0", dev(), perm()), Err(TreeError::Exists("0000:00:03.0".into())));
        assert!(matches!(t.add(d, "x", dev(), perm()), Err(TreeError::NoBus(_))));
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(t.add(ROOT, bad, dev(), perm()), Err(TreeError::BadName(_))));
        }
        assert_eq!(t.walk().len(), 3);
        let gone = t.remove(bus);
        assert_eq!(gone.len(), 2);
        assert!(t.get(d).is_none());
        assert!(t.children(ROOT).is_empty());
        // Inode numbers are not reused.
        let again = t.add(ROOT, "pci", dev(), perm()).unwrap();
        assert!(again > d);
    }
}
