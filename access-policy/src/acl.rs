//! POSIX access ACLs and the mode bits, kept in step.
//!
//! With `FUSE_POSIX_ACL` the kernel enforces ACLs but leaves keeping the
//! mode and the ACL consistent to the file system, as `posix_acl_update_mode`
//! and `posix_acl_chmod` do for a disk file system: setting an ACL sets the
//! mode's owner bits from the owner entry, its group bits from the mask entry
//! (or the owning group's entry when there is no mask) and its other bits
//! from the other entry; a chmod rewrites those same entries.
//!
//! The value is the kernel's `system.posix_acl_access` format: a 4-byte
//! little-endian version (2), then 8-byte entries (tag u16, perm u16, id u32).

/// `ACL_USER_OBJ`.
const USER_OBJ: u16 = 0x01;
/// `ACL_GROUP_OBJ`.
const GROUP_OBJ: u16 = 0x04;
/// `ACL_MASK`.
const MASK: u16 = 0x10;
/// `ACL_OTHER`.
const OTHER: u16 = 0x20;

fn entries(acl: &[u8]) -> Option<impl Iterator<Item = (usize, u16, u16)> + '_> {
    let body = acl.get(4..)?;
    if acl[..4] != 2u32.to_le_bytes() || body.len() % 8 != 0 {
        return None;
    }
    Some(body.chunks_exact(8).enumerate().map(|(i, e)| {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        (4 + i * 8, tag, perm)
    }))
}

/// The mode an ACL implies, keeping the bits above `0o777` of `old_mode`.
/// `None` if the ACL is malformed or lacks an owner, group or other entry.
pub fn mode_from_acl(acl: &[u8], old_mode: u32) -> Option<u32> {
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    for (_, tag, perm) in entries(acl)? {
        let p = u32::from(perm & 7);
        match tag {
            USER_OBJ => user = Some(p),
            GROUP_OBJ => group = Some(p),
            MASK => mask = Some(p),
            OTHER => other = Some(p),
            _ => {}
        }
    }
    let g = mask.or(group)?;
    Some((old_mode & !0o777) | (user? << 6) | (g << 3) | other?)
}

/// The ACL after a chmod to `mode`: owner, mask (or owning group) and other
/// entries take the new bits; named entries are kept. `None` if malformed.
pub fn acl_chmod(acl: &[u8], mode: u32) -> Option<Vec<u8>> {
    let list: Vec<(usize, u16, u16)> = entries(acl)?.collect();
    let has_mask = list.iter().any(|(_, t, _)| *t == MASK);
    let mut out = acl.to_vec();
    for (off, tag, _) in list {
        let bits = match tag {
            USER_OBJ => (mode >> 6) & 7,
            MASK => (mode >> 3) & 7,
            GROUP_OBJ if !has_mask => (mode >> 3) & 7,
            OTHER => mode & 7,
            _ => continue,
        };
        out[off + 2..off + 4].copy_from_slice(&(bits as u16).to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (t, p, id) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn mode_follows_owner_mask_and_other() {
        // setfacl -m u:4242:r on a 0600 file: user::rw- user:4242:r-- group::--- mask::r-- other::---
        let a = acl(&[
            (USER_OBJ, 6, u32::MAX),
            (0x02, 4, 4242),
            (GROUP_OBJ, 0, u32::MAX),
            (MASK, 4, u32::MAX),
            (OTHER, 0, u32::MAX),
        ]);
        assert_eq!(mode_from_acl(&a, 0o4600), Some(0o4640));
        // Without a mask the owning group's entry gives the group bits.
        let b = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 1, 0)]);
        assert_eq!(mode_from_acl(&b, 0), Some(0o751));
        assert_eq!(mode_from_acl(&[1, 0, 0, 0], 0), None);
        assert_eq!(mode_from_acl(&acl(&[(USER_OBJ, 7, 0)]), 0), None);
    }

    #[test]
    fn chmod_rewrites_the_entries_the_mode_stands_for() {
        let a = acl(&[(USER_OBJ, 6, 0), (0x02, 4, 4242), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 0, 0)]);
        let b = acl_chmod(&a, 0o604).unwrap();
        assert_eq!(mode_from_acl(&b, 0), Some(0o604));
        // The named entry and the owning group entry are kept.
        assert_eq!(&b[12..20], &a[12..20]);
        assert_eq!(&b[20..28], &a[20..28]);
        assert_eq!(acl_chmod(&[9, 9], 0o600), None);
    }
}
