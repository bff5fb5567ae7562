//! The DDM's own ids, each a type of its own: an inode is not a file
//! handle, and neither is a driver instance's index. (The ids drivers give,
//! `DeviceId`, `BusId` and `Handle`, are in [`ddf::proto`].)

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// An inode number of the mount: never reused while `ddm` runs.
    Ino(u64)
);

id!(
    /// A FUSE file handle: one open file under the mount.
    Fh(u64)
);

id!(
    /// A driver instance: its index in `Core::instances` (stable: instances
    /// are only ever appended).
    InstanceId(usize)
);

/// The root of the tree, the null bus.
pub const ROOT: Ino = Ino(1);
