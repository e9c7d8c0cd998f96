//! Fixed-size item lists (report blocks, SSRCs, FIR entries, NACK pairs) that either borrow
//! wire bytes (after parsing) or a caller's slice (before writing), so neither side allocates.

use core::fmt;
use core::iter::FusedIterator;

use crate::packet::read_u32;
use crate::Ssrc;

/// A fixed-size element of an RTCP packet body.
pub trait WireItem: Copy {
    /// Encoded size in bytes.
    const LEN: usize;
    /// Decodes from exactly `LEN` bytes.
    fn read(b: &[u8]) -> Self;
    /// Encodes into exactly `LEN` bytes.
    fn write(&self, b: &mut [u8]);
}

impl WireItem for Ssrc {
    const LEN: usize = 4;
    fn read(b: &[u8]) -> Self {
        Ssrc(read_u32(b, 0))
    }
    fn write(&self, b: &mut [u8]) {
        b.copy_from_slice(&self.0.to_be_bytes());
    }
}

/// A list of `T`, borrowed from wire bytes or from a slice.
#[derive(Clone, Copy)]
pub struct Items<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    Wire(&'a [u8]),
    Slice(&'a [T]),
}

impl<'a, T: WireItem> Items<'a, T> {
    /// A list backed by `items`, for writing.
    pub const fn from_slice(items: &'a [T]) -> Self {
        Items {
            repr: Repr::Slice(items),
        }
    }

    /// A list over wire bytes; a trailing partial item is ignored.
    pub(crate) fn from_wire(bytes: &'a [u8]) -> Self {
        let whole = bytes.len() / T::LEN * T::LEN;
        Items {
            repr: Repr::Wire(&bytes[..whole]),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Wire(b) => b.len() / T::LEN,
            Repr::Slice(s) => s.len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<T> {
        match self.repr {
            Repr::Wire(b) => b.get(index * T::LEN..(index + 1) * T::LEN).map(T::read),
            Repr::Slice(s) => s.get(index).copied(),
        }
    }

    /// Iterates the items.
    pub fn iter(&self) -> ItemsIter<'a, T> {
        ItemsIter {
            repr: self.repr,
            pos: 0,
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.len() * T::LEN
    }

    /// Writes all items into `buf`, which is exactly `encoded_len()` long.
    pub(crate) fn write(&self, buf: &mut [u8]) {
        for (item, out) in self.iter().zip(buf.chunks_exact_mut(T::LEN)) {
            item.write(out);
        }
    }
}

impl<T> Default for Items<'_, T> {
    fn default() -> Self {
        Items {
            repr: Repr::Slice(&[]),
        }
    }
}

impl<T: WireItem + PartialEq> PartialEq for Items<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: WireItem + Eq> Eq for Items<'_, T> {}

impl<T: WireItem + fmt::Debug> fmt::Debug for Items<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: WireItem> IntoIterator for Items<'a, T> {
    type Item = T;
    type IntoIter = ItemsIter<'a, T>;
    fn into_iter(self) -> ItemsIter<'a, T> {
        self.iter()
    }
}

/// Iterator over [`Items`].
#[derive(Clone)]
pub struct ItemsIter<'a, T> {
    repr: Repr<'a, T>,
    pos: usize,
}

impl<T: WireItem> Iterator for ItemsIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let item = match self.repr {
            Repr::Wire(b) => b
                .get(self.pos * T::LEN..(self.pos + 1) * T::LEN)
                .map(T::read),
            Repr::Slice(s) => s.get(self.pos).copied(),
        }?;
        self.pos += 1;
        Some(item)
    }
}

impl<T: WireItem> FusedIterator for ItemsIter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_slice_lists_compare_equal() {
        let ssrcs = [Ssrc(1), Ssrc(0xdead_beef)];
        let wire = [0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0xff];
        let a = Items::from_slice(&ssrcs);
        let b = Items::<Ssrc>::from_wire(&wire);
        assert_eq!(b.len(), 2);
        assert_eq!(a, b);
        assert_eq!(b.get(1), Some(Ssrc(0xdead_beef)));
        assert_eq!(b.get(2), None);
        let mut out = [0u8; 8];
        a.write(&mut out);
        assert_eq!(out, wire[..8]);
        assert_eq!(format!("{b:?}"), "[Ssrc(1), Ssrc(3735928559)]");
    }
}
