//! The difference between two enumerations of a bus.
//!
//! A bus driver keeps what it last reported; after a rescan it reports only
//! the difference: what appeared, what went, and what changed (same
//! address, other description, for example another kernel driver bound).

use std::collections::BTreeMap;

/// What changed between an old and a new enumeration, each list in key
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff<K> {
    /// In the new set only.
    pub added: Vec<K>,
    /// In the old set only.
    pub removed: Vec<K>,
    /// In both, with different values.
    pub changed: Vec<K>,
}

impl<K> Diff<K> {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares `old` with `new`.
pub fn diff<K: Ord + Clone, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Diff<K> {
    let mut d = Diff { added: Vec::new(), removed: Vec::new(), changed: Vec::new() };
    for (k, v) in new {
        match old.get(k) {
            None => d.added.push(k.clone()),
            Some(was) if was != v => d.changed.push(k.clone()),
            Some(_) => {}
        }
    }
    d.removed = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&'static str, u32)]) -> BTreeMap<&'static str, u32> {
        items.iter().copied().collect()
    }

    #[test]
    fn adds_removes_and_changes() {
        let old = set(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = set(&[("b", 2), ("c", 4), ("d", 5), ("e", 6)]);
        assert_eq!(diff(&old, &new), Diff { added: vec!["d", "e"], removed: vec!["a"], changed: vec!["c"] });
    }

    #[test]
    fn equal_sets_and_empty_sides() {
        let s = set(&[("a", 1), ("b", 2)]);
        assert!(diff(&s, &s).is_empty());
        let empty = set(&[]);
        let from_nothing = diff(&empty, &s);
        assert_eq!((from_nothing.added, from_nothing.removed), (vec!["a", "b"], vec![]));
        let to_nothing = diff(&s, &empty);
        assert_eq!((to_nothing.added, to_nothing.removed), (vec![], vec!["a", "b"]));
        assert!(diff(&empty, &empty).is_empty());
    }
}
