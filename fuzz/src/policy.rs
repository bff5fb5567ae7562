//! The access policy's decoders ([`access_policy`]): the rules file
//! (`ddm --rules FILE`), the permission state file (`/var/lib/ddf`), and
//! the POSIX ACL values clients set with `setfacl`.

use access_policy::acl::{acl_chmod, mode_from_acl};
use access_policy::{KindFilter, NodeKind, Pattern, PermStore, Policy, Rule};

/// The name rules and state are read under, for messages.
const SOURCE: &str = "fuzz.rules";

/// What a rule decides, without where it was written.
type Decision<'a> = (KindFilter, &'a Pattern, Option<u32>, Option<u32>, Option<u32>);

/// The [`Decision`] of `rule`.
fn decision(rule: &Rule) -> Decision<'_> {
    (rule.kind, &rule.pattern, rule.uid, rule.gid, rule.mode)
}

/// `rules`: a rules file, as [`Policy::add_file`] reads it (the bytes are
/// taken as text; a line that is not UTF-8 is its own error, which the
/// unit tests cover). Every rule read prints, in rules-file syntax, as a
/// line that reads back as the same rule, and the whole policy printed
/// reads back as the same rules; asking the policy about any node gives a
/// mode within `07777`.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut policy = Policy::empty();
    if let Err(e) = policy.add_str(SOURCE, &text) {
        let message = e.to_string();
        assert!(message.starts_with(SOURCE), "an error that does not say where: {message}");
        assert!(policy.rules().is_empty(), "a file with an error added rules");
        return;
    }
    for rule in policy.rules() {
        let line = rule.to_string();
        let mut again = Policy::empty();
        if let Err(e) = again.add_str("again", &line) {
            panic!("{rule:?} prints as {line:?}, which does not read back: {e}");
        }
        match again.rules() {
            [back] => assert_eq!(decision(back), decision(rule), "{line:?} reads back as another rule"),
            other => panic!("{line:?} reads back as {} rules", other.len()),
        }
        let path = rule.pattern.as_str();
        for kind in [NodeKind::Bus, NodeKind::CharDevice, NodeKind::BlockDevice] {
            let perm = policy.perm_for(path, kind);
            assert!(perm.mode <= 0o7777, "mode {:o} for {path:?}", perm.mode);
        }
    }
    let printed = policy.to_string();
    let mut again = Policy::empty();
    if let Err(e) = again.add_str("again", &printed) {
        panic!("the policy prints as {printed:?}, which does not read back: {e}");
    }
    let before: Vec<_> = policy.rules().iter().map(decision).collect();
    let after: Vec<_> = again.rules().iter().map(decision).collect();
    assert_eq!(after, before, "the printed policy {printed:?} reads back as other rules");
}

/// `permissions`: a permission state file, as `PermStore::open` decodes it
/// ([`PermStore::from_document`]). A store that loads writes a document that
/// loads as the same store and writes the same document again; every stored
/// ACL is checked as [`acl`] checks one.
pub fn permissions(data: &[u8]) {
    let Ok(store) = PermStore::from_document("fuzz.json", data) else {
        return;
    };
    let doc = match store.to_document() {
        Ok(d) => d,
        Err(e) => panic!("a store that loaded does not encode: {e}"),
    };
    let again = match PermStore::from_document("fuzz.json", &doc) {
        Ok(s) => s,
        Err(e) => panic!("the document a store writes does not load: {e}\n{}", String::from_utf8_lossy(&doc)),
    };
    assert_eq!(again.to_document().ok().as_deref(), Some(&doc[..]), "the document changed on a second round");
    assert_eq!(again.len(), store.len());
    assert!(store.keys().eq(again.keys()), "the keys changed on a round trip");
    for key in store.keys() {
        assert_eq!(again.get(&key), store.get(&key), "{key}: owner, group or mode changed on a round trip");
        assert_eq!(again.get_acl(&key), store.get_acl(&key), "{key}: ACL changed on a round trip");
        if let Some(perm) = store.get(&key) {
            assert!(perm.mode <= 0o7777, "{key}: mode {:o} loaded", perm.mode);
        }
        if let Some(value) = store.get_acl(&key) {
            acl(value);
        }
    }
}

/// `acl`: a `system.posix_acl_access` value as a client sets it with
/// `setxattr` (`setfacl`), read by [`mode_from_acl`] and rewritten by
/// [`acl_chmod`] on a later `chmod`. A chmod of a well-formed ACL changes
/// only the permissions of the owner, mask (or owning group) and other
/// entries, and the ACL then implies exactly the new mode.
pub fn acl(data: &[u8]) {
    let implied = mode_from_acl(data, 0o7000);
    if let Some(mode) = implied {
        assert_eq!(mode & 0o7000, 0o7000, "the bits above 0777 were not kept");
    }
    for mode in [0o000, 0o751, 0o4640, 0o7777] {
        let Some(changed) = acl_chmod(data, mode) else {
            assert!(implied.is_none(), "acl_chmod refused an ACL that mode_from_acl reads");
            continue;
        };
        assert_eq!(changed.len(), data.len(), "chmod changed the ACL's length");
        // Tags and ids stay; only the permission words may change.
        for (i, (a, b)) in data.iter().zip(&changed).enumerate() {
            let in_perm = i >= 4 && (i - 4) % 8 >= 2 && (i - 4) % 8 < 4;
            assert!(a == b || in_perm, "chmod changed byte {i}, outside a permission word");
        }
        if implied.is_some() {
            assert_eq!(mode_from_acl(&changed, 0), Some(mode & 0o777), "after chmod {mode:o}");
        }
    }
}
