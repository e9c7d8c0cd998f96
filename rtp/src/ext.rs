//! RTP header extensions: the RFC 8285 one-byte and two-byte element forms.

/// "defined by profile" value of the one-byte extension form (RFC 8285 §4.2).
pub(crate) const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// The two-byte form uses 0x100 followed by 4 application bits (RFC 8285 §4.3).
pub(crate) const TWO_BYTE_PROFILE: u16 = 0x1000;
const TWO_BYTE_MASK: u16 = 0xFFF0;

/// The header extension block of a packet (RFC 3550 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions<'a> {
    profile: u16,
    data: &'a [u8],
}

impl<'a> Extensions<'a> {
    pub(crate) fn new(profile: u16, data: &'a [u8]) -> Self {
        Extensions { profile, data }
    }

    /// The 16-bit "defined by profile" field.
    pub fn profile(&self) -> u16 {
        self.profile
    }
    /// The extension data after the 4-byte extension header.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// Iterates RFC 8285 elements in wire order. Yields nothing for other profiles, and stops
    /// at the first element that does not fit.
    pub fn iter(&self) -> ExtensionIter<'a> {
        let form = if is_one_byte(self.profile) {
            Form::OneByte
        } else if is_two_byte(self.profile) {
            Form::TwoByte
        } else {
            Form::Other
        };
        ExtensionIter {
            data: self.data,
            pos: 0,
            form,
        }
    }
    /// Data of the first element with `id`.
    pub fn get(&self, id: u8) -> Option<&'a [u8]> {
        self.iter().find(|e| e.id == id).map(|e| e.data)
    }
}

impl<'a> IntoIterator for Extensions<'a> {
    type Item = ExtensionElement<'a>;
    type IntoIter = ExtensionIter<'a>;
    fn into_iter(self) -> ExtensionIter<'a> {
        self.iter()
    }
}

/// One RFC 8285 header extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    /// Local identifier negotiated in SDP (`a=extmap`).
    pub id: u8,
    /// Element data.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    OneByte,
    TwoByte,
    Other,
}

/// Iterator over [`ExtensionElement`]s; see [`Extensions::iter`].
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    data: &'a [u8],
    pos: usize,
    form: Form,
}

impl<'a> ExtensionIter<'a> {
    /// The next element and the offset of its data in the extension data, so that callers
    /// inside the crate can rewrite it in place.
    pub(crate) fn next_with_offset(&mut self) -> Option<(usize, ExtensionElement<'a>)> {
        loop {
            let first = *self.data.get(self.pos)?;
            if first == 0 {
                // RFC 8285 §4.1: zero octets are padding between elements.
                self.pos += 1;
                continue;
            }
            let (id, len, head) = match self.form {
                Form::Other => return None,
                // RFC 8285 §4.2: id 15 is reserved and ends processing.
                Form::OneByte if first >> 4 == 15 => return None,
                Form::OneByte => (first >> 4, usize::from(first & 0x0F) + 1, 1),
                Form::TwoByte => (first, usize::from(*self.data.get(self.pos + 1)?), 2),
            };
            let start = self.pos + head;
            let Some(data) = self.data.get(start..start + len) else {
                self.pos = self.data.len();
                return None;
            };
            self.pos = start + len;
            return Some((start, ExtensionElement { id, data }));
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = ExtensionElement<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with_offset().map(|(_, e)| e)
    }
}

/// Whether `profile` is the RFC 8285 one-byte form.
pub(crate) fn is_one_byte(profile: u16) -> bool {
    profile == ONE_BYTE_PROFILE
}

/// Whether `profile` is the RFC 8285 two-byte form (any 4 application bits).
pub(crate) fn is_two_byte(profile: u16) -> bool {
    profile & TWO_BYTE_MASK == TWO_BYTE_PROFILE
}

#[cfg(test)]
mod tests {
    use crate::RtpHeader;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn parses_two_byte_extensions() {
        let p = hex("9000 0001 00000002 11111111 1000 0002 0102 abcd 2000 0000");
        let h = RtpHeader::parse(&p).unwrap();
        let elems: Vec<_> = h
            .extensions()
            .unwrap()
            .iter()
            .map(|e| (e.id, e.data.len()))
            .collect();
        assert_eq!(elems, vec![(1, 2), (32, 0)]);
    }

    #[test]
    fn malformed_extension_elements_stop_iteration() {
        // One-byte element claims 16 bytes but only 3 are there.
        let p = hex("9000 0001 00000002 11111111 bede 0001 f0 000000");
        assert_eq!(
            RtpHeader::parse(&p)
                .unwrap()
                .extensions()
                .unwrap()
                .iter()
                .count(),
            0
        );
        let p = hex("9000 0001 00000002 11111111 bede 0001 2f 000000");
        assert_eq!(
            RtpHeader::parse(&p)
                .unwrap()
                .extensions()
                .unwrap()
                .iter()
                .count(),
            0
        );
    }
}
