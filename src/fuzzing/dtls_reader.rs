//! The dtls 0.17.2 reader's path from a datagram to its handshake message parsers, ported
//! statement by statement because the crate keeps it private: `unpack_datagram`
//! (`record_layer/mod.rs`), `handle_incoming_packet` for epoch-0 records (`conn/mod.rs`) and
//! `FragmentBuffer` (`fragment_buffer/mod.rs`). The parsers themselves are the crate's. It is
//! written independently of `dtls::guard` so that the fuzz target can check one against the
//! other; keep it a faithful copy rather than a better design.

use std::collections::HashMap;

use ::dtls::content::ContentType;
use ::dtls::handshake::Handshake;
use ::dtls::record_layer::record_layer_header::{RecordLayerHeader, RECORD_LAYER_HEADER_SIZE};
use ::dtls::record_layer::RecordLayer;

/// `conn::INBOUND_BUFFER_SIZE`: the reader's receive buffer.
const INBOUND_BUFFER_SIZE: usize = 8192;
/// `fragment_buffer::FRAGMENT_BUFFER_MAX_SIZE`.
const FRAGMENT_BUFFER_MAX_SIZE: usize = 2_000_000;
/// `handshake_header::HANDSHAKE_HEADER_LENGTH`.
const HANDSHAKE_HEADER_LENGTH: usize = 12;

/// One connection's reader state (the fragment buffer; the rest does not decide what is parsed).
#[derive(Default)]
pub(crate) struct CrateReader {
    cache: HashMap<u16, Vec<Fragment>>,
    current_message_sequence_number: u16,
}

struct Fragment {
    handshake_type: u8,
    length: u32,
    fragment_offset: u32,
    fragment_length: u32,
    data: Vec<u8>,
}

impl CrateReader {
    /// What the reader does with one datagram; panics where the crate would.
    pub(crate) fn receive(&mut self, datagram: &[u8]) {
        // `Conn::recv` into the reader's buffer: a longer datagram is cut (our ChanConn).
        let datagram = &datagram[..datagram.len().min(INBOUND_BUFFER_SIZE)];
        let Some(pkts) = unpack_datagram(datagram) else {
            return;
        };
        for pkt in pkts {
            let Ok(h) = RecordLayerHeader::unmarshal(&mut pkt.as_slice()) else {
                continue;
            };
            // Later epochs are queued or decrypted first (AEAD): a forger never gets further.
            // The replay window only drops records, so it can only make the crate see less.
            if h.epoch != 0 {
                continue;
            }
            match self.push(&pkt) {
                Ok(true) => {
                    while let Some(out) = self.pop() {
                        let _ = Handshake::unmarshal(&mut out.as_slice());
                    }
                }
                Ok(false) => {
                    let _ = RecordLayer::unmarshal(&mut pkt.as_slice());
                }
                Err(()) => {}
            }
        }
    }

    fn push(&mut self, mut buf: &[u8]) -> Result<bool, ()> {
        let current_size: usize = self
            .cache
            .values()
            .map(|f| f.iter().map(|f| f.data.len()).sum::<usize>())
            .sum();
        if current_size + buf.len() >= FRAGMENT_BUFFER_MAX_SIZE {
            return Err(());
        }
        let record_layer_header = RecordLayerHeader::unmarshal(&mut buf).map_err(|_| ())?;
        if record_layer_header.content_type != ContentType::Handshake {
            return Ok(false);
        }
        // `buf` is past the record header now, as the crate's `&buf[RECORD_LAYER_HEADER_SIZE..]`.
        while !buf.is_empty() {
            if buf.len() < HANDSHAKE_HEADER_LENGTH {
                return Err(()); // HandshakeHeader::unmarshal fails; earlier fragments stay
            }
            let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
            let fragment = Fragment {
                handshake_type: buf[0],
                length: u24(&buf[1..4]),
                fragment_offset: u24(&buf[6..9]),
                fragment_length: u24(&buf[9..12]),
                data: Vec::new(),
            };
            let message_sequence = u16::from_be_bytes([buf[4], buf[5]]);
            let mut end = HANDSHAKE_HEADER_LENGTH + fragment.length as usize;
            if end > buf.len() {
                end = buf.len();
            }
            let data = buf[HANDSHAKE_HEADER_LENGTH..end].to_vec();
            self.cache
                .entry(message_sequence)
                .or_default()
                .push(Fragment { data, ..fragment });
            buf = &buf[end..];
        }
        Ok(true)
    }

    fn pop(&mut self) -> Option<Vec<u8>> {
        let seq_num = self.current_message_sequence_number;
        let frags = self.cache.get(&seq_num)?;
        let mut raw_message = vec![];
        if !append_message(0, frags, &mut raw_message) {
            return None;
        }
        // `HandshakeHeader` keeps the type as an enum: an unknown one is written back as
        // `Invalid`, which parses as unknown again.
        let first = &frags[0];
        let l = first.length.to_be_bytes();
        let s = seq_num.to_be_bytes();
        let mut out = vec![first.handshake_type, l[1], l[2], l[3], s[0], s[1], 0, 0, 0];
        out.extend_from_slice(&l[1..]);
        out.extend_from_slice(&raw_message);
        self.cache.remove(&seq_num);
        self.current_message_sequence_number = self.current_message_sequence_number.wrapping_add(1);
        Some(out)
    }
}

fn append_message(target_offset: u32, frags: &[Fragment], raw_message: &mut Vec<u8>) -> bool {
    for f in frags {
        if f.fragment_offset == target_offset {
            let fragment_end = f.fragment_offset + f.fragment_length;
            if fragment_end != f.length
                && f.fragment_length != 0
                && !append_message(fragment_end, frags, raw_message)
            {
                return false;
            }
            let mut message = vec![];
            message.extend_from_slice(&f.data);
            message.extend_from_slice(raw_message);
            *raw_message = message;
            return true;
        }
    }
    false
}

fn unpack_datagram(buf: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = vec![];
    let mut offset = 0;
    while buf.len() != offset {
        if buf.len() - offset <= RECORD_LAYER_HEADER_SIZE {
            return None;
        }
        let pkt_len = RECORD_LAYER_HEADER_SIZE
            + (((buf[offset + RECORD_LAYER_HEADER_SIZE - 2] as usize) << 8)
                | buf[offset + RECORD_LAYER_HEADER_SIZE - 1] as usize);
        if offset + pkt_len > buf.len() {
            return None;
        }
        out.push(buf[offset..offset + pkt_len].to_vec());
        offset += pkt_len
    }
    Some(out)
}
