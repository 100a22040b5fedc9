//! Storage of the scheduler's entries: a [`Slab`] addresses workers, jobs, lanes and classes by a
//! dense `u32` index (so the ordered structures hold small `Copy` keys instead of strings), and
//! [`IdMap`] finds an entry from an id the store handed out with a multiplicative hash instead of
//! SipHash.
//!
//! SipHash is there to resist flooding by an attacker who picks the keys. The keys hashed here are
//! ids the store allocates and interned indices, never text a user chooses, so a fast hash that
//! spreads sequential integers is the right trade: the steady-state loop hashes a job id on every
//! `finished` and `enqueue`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Index, IndexMut};

/// Entries addressed by index. A removed entry's index is reused by the next insertion, so the
/// indices stay dense and the vector never grows beyond the most entries held at once.
#[derive(Debug, Clone)]
pub(super) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its index.
    pub(super) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = Some(value);
                index
            }
            None => {
                let index = u32::try_from(self.entries.len())
                    .expect("a scheduler holds fewer than 2^32 entries of one kind");
                self.entries.push(Some(value));
                index
            }
        }
    }

    /// Takes the entry at `index` out.
    ///
    /// # Panics
    /// If there is no entry at `index`: the scheduler only removes what it inserted.
    pub(super) fn remove(&mut self, index: u32) -> T {
        let value = self.entries[index as usize]
            .take()
            .expect("removed a vacant slab entry");
        self.free.push(index);
        self.len -= 1;
        value
    }

    /// The entry at `index`, if any.
    pub(super) fn get(&self, index: u32) -> Option<&T> {
        self.entries.get(index as usize).and_then(Option::as_ref)
    }

    /// The entry at `index`, if any, to change.
    pub(super) fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.entries
            .get_mut(index as usize)
            .and_then(Option::as_mut)
    }

    /// How many entries are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every entry with its index, in index order, to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter_map(|(index, entry)| entry.as_mut().map(|value| (index as u32, value)))
    }

    /// Every entry with its index, in index order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| entry.as_ref().map(|value| (index as u32, value)))
    }
}

impl<T> Index<u32> for Slab<T> {
    type Output = T;

    fn index(&self, index: u32) -> &T {
        self.entries[index as usize]
            .as_ref()
            .expect("read a vacant slab entry")
    }
}

impl<T> IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, index: u32) -> &mut T {
        self.entries[index as usize]
            .as_mut()
            .expect("wrote a vacant slab entry")
    }
}

/// The least of a set of keys, each held at a slot (a dense index): setting a slot's key is
/// O(log slots) comparisons in an array (a tournament tree holding the keys themselves, so a
/// comparison reads two neighbouring entries), reading the least is O(1). It replaces an ordered
/// set where keys change often and only the least is read: no node allocation, no shifting.
#[derive(Debug, Clone)]
pub(super) struct MinTree<K> {
    /// `tree[n]` is the least `(key, slot)` under node `n`; leaves start at `width`.
    tree: Vec<Option<(K, u32)>>,
    width: usize,
}

impl<K: Ord + Copy> Default for MinTree<K> {
    fn default() -> Self {
        MinTree {
            tree: vec![None; 2],
            width: 1,
        }
    }
}

impl<K: Ord + Copy> MinTree<K> {
    /// Sets or clears the key of `slot`.
    pub(super) fn set(&mut self, slot: u32, key: Option<K>) {
        if slot as usize >= self.width {
            self.grow(slot as usize + 1);
        }
        let mut node = self.width + slot as usize;
        self.tree[node] = key.map(|key| (key, slot));
        while node > 1 {
            node /= 2;
            let best = match (self.tree[2 * node], self.tree[2 * node + 1]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if self.tree[node] == best {
                break;
            }
            self.tree[node] = best;
        }
    }

    /// The least key and its slot.
    pub(super) fn first(&self) -> Option<(K, u32)> {
        self.tree[1]
    }

    /// The key of `slot`.
    #[cfg(test)]
    pub(super) fn get(&self, slot: u32) -> Option<K> {
        let node = self.width + slot as usize;
        self.tree.get(node).copied().flatten().map(|(key, _)| key)
    }

    /// How many slots hold a key. O(slots).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tree[self.width..]
            .iter()
            .filter(|leaf| leaf.is_some())
            .count()
    }

    fn grow(&mut self, slots: usize) {
        let width = slots.next_power_of_two();
        let mut tree = vec![None; 2 * width];
        tree[width..width + self.width].copy_from_slice(&self.tree[self.width..]);
        for node in (1..width).rev() {
            tree[node] = match (tree[2 * node], tree[2 * node + 1]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.tree = tree;
        self.width = width;
    }
}

/// A multiplicative hash (the one rustc uses for its own tables) for integer keys.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by ids or interned indices.
pub(super) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_reuses_the_indices_it_frees() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), "a");
        let c = slab.insert("c");
        assert_eq!(c, a);
        assert_eq!(slab[b], "b");
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["c", "b"]);
    }

    #[test]
    fn min_tree_keeps_the_least_key_as_slots_change() {
        let mut tree = MinTree::default();
        assert_eq!(tree.first(), None);
        tree.set(5, Some(50));
        tree.set(2, Some(20));
        tree.set(9, Some(90));
        assert_eq!(tree.first(), Some((20, 2)));
        tree.set(2, Some(95));
        assert_eq!(tree.first(), Some((50, 5)));
        tree.set(5, None);
        assert_eq!(tree.first(), Some((90, 9)));
        assert_eq!((tree.get(2), tree.get(5), tree.len()), (Some(95), None, 2));
        tree.set(40, Some(1));
        assert_eq!(tree.first(), Some((1, 40)));
    }

    #[test]
    fn id_hasher_spreads_sequential_ids() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        let top_bits: std::collections::BTreeSet<u64> =
            (0..64u64).map(|n| build.hash_one(n) >> 57).collect();
        assert!(top_bits.len() > 32, "{top_bits:?}");
    }
}
