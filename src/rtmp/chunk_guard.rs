//! [`ChunkGuard`]: walks the RTMP chunk stream (RTMP 1.0 §5.3) a peer sends, ahead of the
//! protocol crate's deserializer, and refuses what that deserializer cannot take safely.
//!
//! `rml_rtmp`'s chunk deserializer assembles one message at a time and trusts the peer: a chunk
//! of another chunk stream in the middle of a message, or an extended timestamp below
//! 0xFFFFFF on a delta header, makes it subtract past zero (a panic, or in release a huge
//! allocation); any message length up to 16 MiB is buffered; any number of chunk streams is
//! remembered; AMF0 is parsed recursively with no depth limit. The guard sees the same bytes
//! first, keeps only chunk headers (never payloads, beyond the four bytes of a protocol control
//! message), and ends the connection with a typed error on any of those. Encoders (ffmpeg, OBS,
//! librtmp, hardware encoders) send one message's chunks back to back, so refusing interleaved
//! messages costs them nothing.

use std::collections::HashMap;

/// RTMP's initial chunk size (RTMP 1.0 §5.4.1).
const INITIAL_CHUNK_SIZE: u32 = 128;
/// The largest chunk size RTMP allows (the top bit must be zero).
const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// A timestamp field of this value says an extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// The longest chunk header: 3 bytes basic header, 11 message header, 4 extended timestamp.
const MAX_HEADER: usize = 18;

/// Message type ids the guard looks into.
const SET_CHUNK_SIZE: u8 = 1;
const WINDOW_ACK_SIZE: u8 = 5;
/// AMF0/AMF3 commands, data, shared objects: parsed recursively by the protocol crate.
const AMF_TYPES: [u8; 6] = [15, 16, 17, 18, 19, 20];
/// An AMF0 command: the protocol crate takes its first three values without checking that
/// there are three.
const AMF0_COMMAND: u8 = 20;
/// An AMF3 command, read by the protocol crate as an AMF0 one: refused.
const AMF3_COMMAND: u8 = 17;

/// The guard's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// The longest message (audio and video included).
    pub max_message_bytes: u32,
    /// The longest AMF command or data message: bounds the nesting the AMF0 parser recurses
    /// into (three bytes at least per level).
    pub max_command_bytes: u32,
    /// How many chunk streams a peer may use.
    pub max_chunk_streams: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_message_bytes: 4 * 1024 * 1024,
            max_command_bytes: 8 * 1024,
            max_chunk_streams: 32,
        }
    }
}

/// Why the guard refused the chunk stream; the connection ends with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk began a new message before the previous message's chunks were all there.
    #[error("chunk stream {csid} began a message while chunk stream {open} had one unfinished (interleaved messages are not accepted)")]
    Interleaved { csid: u32, open: u32 },
    /// A compressed header on a chunk stream that never had a full one.
    #[error("chunk stream {0} continued before it began")]
    NoPreviousHeader(u32),
    /// An extended timestamp that cannot be a delta (below 0xFFFFFF).
    #[error("extended timestamp {0:#x} on a delta header is below 0xFFFFFF")]
    BadExtendedTimestamp(u32),
    /// A message longer than the limit.
    #[error("message of {length} bytes (type {type_id}) is over the limit of {limit}")]
    MessageTooLong {
        type_id: u8,
        length: u32,
        limit: u32,
    },
    /// More chunk streams than the limit.
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    /// Set Chunk Size of 0, or with the top bit set.
    #[error("chunk size {0} is outside 1..=2147483647")]
    BadChunkSize(u32),
    /// Window Acknowledgement Size with the top bit set.
    #[error("window acknowledgement size {0} is over 2147483647")]
    BadWindowSize(u32),
    /// An AMF0 command of fewer than three values (name, transaction id, command object).
    #[error("AMF0 command of {0} values (at least 3: name, transaction id, object)")]
    ShortCommand(usize),
    /// An AMF3 command message (type 17): encoders publish with AMF0 commands, and the protocol
    /// crate reads these unchecked.
    #[error("AMF3 command messages are not accepted")]
    Amf3Command,
    /// A protocol control message shorter than its four bytes.
    #[error("protocol control message of type {0} is shorter than 4 bytes")]
    ShortControlMessage(u8),
}

/// What the guard remembers of a chunk stream's last header.
#[derive(Debug, Clone, Copy)]
struct StreamHeader {
    length: u32,
    type_id: u8,
    /// The last timestamp field (absolute or delta): says whether a type 3 header carries an
    /// extended timestamp.
    timestamp_field: u32,
}

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Reading a chunk header (its bytes so far are in `header`).
    Header,
    /// Inside a chunk's payload: this many bytes of it are left.
    Payload { left: u32 },
}

/// The message whose chunks are arriving.
#[derive(Debug, Clone, Copy)]
struct OpenMessage {
    csid: u32,
    type_id: u8,
    /// Bytes of it still to come.
    left: u32,
    /// Its first bytes, for protocol control messages.
    head: [u8; 4],
    head_len: u8,
}

/// Walks a peer's chunk stream (see the module docs). Its memory is bounded: a header buffer,
/// and one small entry per chunk stream up to [`ChunkLimits::max_chunk_streams`].
#[derive(Debug)]
pub struct ChunkGuard {
    limits: ChunkLimits,
    chunk_size: u32,
    position: Position,
    header: [u8; MAX_HEADER],
    header_len: usize,
    streams: HashMap<u32, StreamHeader>,
    open: Option<OpenMessage>,
    /// The AMF0 command being received (at most `max_command_bytes`), checked when complete.
    command: Vec<u8>,
}

impl ChunkGuard {
    /// A guard at the start of a chunk stream (right after the handshake).
    pub fn new(limits: ChunkLimits) -> ChunkGuard {
        ChunkGuard {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            position: Position::Header,
            header: [0; MAX_HEADER],
            header_len: 0,
            streams: HashMap::new(),
            open: None,
            command: Vec::new(),
        }
    }

    /// The peer's chunk size as the guard follows it.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Checks the next bytes of the stream. After an error the guard is of no further use: the
    /// connection ends.
    pub fn check(&mut self, mut bytes: &[u8]) -> Result<(), ChunkError> {
        while !bytes.is_empty() {
            match self.position {
                Position::Header => {
                    self.header[self.header_len] = bytes[0];
                    self.header_len += 1;
                    bytes = &bytes[1..];
                    if let Some(payload) = self.parse_header()? {
                        self.header_len = 0;
                        self.position = Position::Payload { left: payload };
                        if payload == 0 {
                            self.end_chunk()?;
                        }
                    }
                }
                Position::Payload { left } => {
                    let take = (left as usize).min(bytes.len());
                    if let Some(open) = &mut self.open {
                        let have = usize::from(open.head_len);
                        let copy = (4 - have).min(take);
                        open.head[have..have + copy].copy_from_slice(&bytes[..copy]);
                        open.head_len += copy as u8;
                        if open.type_id == AMF0_COMMAND {
                            self.command.extend_from_slice(&bytes[..take]);
                        }
                    }
                    bytes = &bytes[take..];
                    let left = left - take as u32;
                    self.position = Position::Payload { left };
                    if left == 0 {
                        self.end_chunk()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The header parsed from `header[..header_len]`, when it is complete: registers it and
    /// returns the length of the chunk's payload.
    fn parse_header(&mut self) -> Result<Option<u32>, ChunkError> {
        let h = &self.header[..self.header_len];
        let format = h[0] >> 6;
        let (csid, basic) = match h[0] & 0x3F {
            0 if h.len() >= 2 => (u32::from(h[1]) + 64, 2),
            1 if h.len() >= 3 => (u32::from(h[2]) * 256 + u32::from(h[1]) + 64, 3),
            0 | 1 => return Ok(None),
            id => (u32::from(id), 1),
        };
        let message_header = [11, 7, 3, 0][usize::from(format)];
        if h.len() < basic + message_header {
            return Ok(None);
        }
        let m = &h[basic..basic + message_header];
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let previous = self.streams.get(&csid).copied();
        let continues = format == 3 && self.open.is_some_and(|o| o.csid == csid);
        let mut header = match (format, previous) {
            (0, _) => StreamHeader {
                timestamp_field: u24(&m[0..3]),
                length: u24(&m[3..6]),
                type_id: m[6],
            },
            (_, None) => return Err(ChunkError::NoPreviousHeader(csid)),
            (1, Some(_)) => StreamHeader {
                timestamp_field: u24(&m[0..3]),
                length: u24(&m[3..6]),
                type_id: m[6],
            },
            (2, Some(p)) => StreamHeader {
                timestamp_field: u24(&m[0..3]),
                ..p
            },
            (_, Some(p)) => p,
        };
        let extended = header.timestamp_field >= EXTENDED_TIMESTAMP;
        let needed = basic + message_header + if extended { 4 } else { 0 };
        if h.len() < needed {
            return Ok(None);
        }
        if extended && format != 0 && !continues {
            // The protocol crate subtracts 0xFFFFFF from a delta's extended timestamp.
            let e = &h[basic + message_header..needed];
            let value = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            if value < EXTENDED_TIMESTAMP {
                return Err(ChunkError::BadExtendedTimestamp(value));
            }
        }
        if !continues {
            if let Some(open) = self.open {
                return Err(ChunkError::Interleaved {
                    csid,
                    open: open.csid,
                });
            }
            if header.type_id == AMF3_COMMAND {
                return Err(ChunkError::Amf3Command);
            }
            let limit = if AMF_TYPES.contains(&header.type_id) {
                self.limits.max_command_bytes
            } else {
                self.limits.max_message_bytes
            };
            if header.length > limit {
                return Err(ChunkError::MessageTooLong {
                    type_id: header.type_id,
                    length: header.length,
                    limit,
                });
            }
            if previous.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams(
                    self.limits.max_chunk_streams,
                ));
            }
            // A type 3 header repeats the previous one's fields, its timestamp delta included.
            header.timestamp_field = if format == 3 {
                previous.map_or(0, |p| p.timestamp_field)
            } else {
                header.timestamp_field
            };
            self.streams.insert(csid, header);
            self.open = Some(OpenMessage {
                csid,
                type_id: header.type_id,
                left: header.length,
                head: [0; 4],
                head_len: 0,
            });
        }
        let open = self.open.as_ref().map_or(0, |o| o.left);
        Ok(Some(open.min(self.chunk_size)))
    }

    /// A chunk's payload is all there: the message may be complete.
    fn end_chunk(&mut self) -> Result<(), ChunkError> {
        self.position = Position::Header;
        let chunk = self.open.map_or(0, |o| o.left.min(self.chunk_size));
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        open.left -= chunk;
        if open.left > 0 {
            return Ok(());
        }
        let message = *open;
        self.open = None;
        let value = || {
            (message.head_len == 4)
                .then(|| u32::from_be_bytes(message.head))
                .ok_or(ChunkError::ShortControlMessage(message.type_id))
        };
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size = value()?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size;
            }
            AMF0_COMMAND => {
                let mut cursor = std::io::Cursor::new(std::mem::take(&mut self.command));
                let values = rml_amf0::deserialize(&mut cursor).map_or(0, |v| v.len());
                self.command = cursor.into_inner();
                self.command.clear();
                if values < 3 {
                    return Err(ChunkError::ShortCommand(values));
                }
            }
            WINDOW_ACK_SIZE => {
                let size = value()?;
                if size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadWindowSize(size));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type 0 chunk header on `csid` (2..=63).
    fn full_header(csid: u8, timestamp: u32, length: u32, type_id: u8) -> Vec<u8> {
        let mut h = vec![csid];
        h.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        h.extend_from_slice(&length.to_be_bytes()[1..]);
        h.push(type_id);
        h.extend_from_slice(&1u32.to_le_bytes());
        h
    }

    #[test]
    fn a_message_split_in_chunks_passes_in_any_read_sizes() {
        let mut stream = full_header(4, 0, 300, 9);
        stream.extend_from_slice(&[0; 128]);
        stream.push(0xC4);
        stream.extend_from_slice(&[0; 128]);
        stream.push(0xC4);
        stream.extend_from_slice(&[0; 44]);
        stream.extend(full_header(4, 40, 10, 9));
        stream.extend_from_slice(&[0; 10]);
        for read in [1, 3, 7, 1000] {
            let mut guard = ChunkGuard::new(ChunkLimits::default());
            for part in stream.chunks(read) {
                guard.check(part).unwrap();
            }
            assert!(guard.open.is_none());
        }
    }

    #[test]
    fn set_chunk_size_is_followed_and_bounded() {
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        let mut stream = full_header(2, 0, 4, SET_CHUNK_SIZE);
        stream.extend_from_slice(&4096u32.to_be_bytes());
        guard.check(&stream).unwrap();
        assert_eq!(guard.chunk_size(), 4096);
        let mut stream = full_header(2, 0, 4, SET_CHUNK_SIZE);
        stream.extend_from_slice(&(1u32 << 31).to_be_bytes());
        assert_eq!(guard.check(&stream), Err(ChunkError::BadChunkSize(1 << 31)));
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        let stream = full_header(2, 0, 2, SET_CHUNK_SIZE);
        let err = guard.check(&[stream, vec![0, 1]].concat());
        assert_eq!(err, Err(ChunkError::ShortControlMessage(SET_CHUNK_SIZE)));
    }

    #[test]
    fn interleaving_and_orphan_continuations_are_refused() {
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        let mut stream = full_header(4, 0, 300, 9);
        stream.extend_from_slice(&[0; 128]);
        stream.extend(full_header(5, 0, 10, 8));
        assert_eq!(
            guard.check(&stream),
            Err(ChunkError::Interleaved { csid: 5, open: 4 })
        );
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        assert_eq!(guard.check(&[0xC7]), Err(ChunkError::NoPreviousHeader(7)));
    }

    #[test]
    fn long_messages_and_commands_are_refused() {
        let limits = ChunkLimits::default();
        let mut guard = ChunkGuard::new(limits);
        let err = guard.check(&full_header(3, 0, 100_000, 20));
        assert!(matches!(
            err,
            Err(ChunkError::MessageTooLong { type_id: 20, .. })
        ));
        let mut guard = ChunkGuard::new(limits);
        let err = guard.check(&full_header(6, 0, 0xFF_FFFF, 9));
        assert!(matches!(
            err,
            Err(ChunkError::MessageTooLong { type_id: 9, .. })
        ));
    }

    #[test]
    fn delta_extended_timestamps_below_the_marker_are_refused() {
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        let mut stream = full_header(4, 0, 0, 9);
        // Type 1 with the extended marker and an extended value of 5.
        stream.push(0x44);
        stream.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0, 0, 0, 9]);
        stream.extend_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            guard.check(&stream),
            Err(ChunkError::BadExtendedTimestamp(5))
        );
    }

    #[test]
    fn amf0_commands_of_fewer_than_three_values_are_refused() {
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        // One string value: "ab".
        let mut stream = full_header(3, 0, 5, AMF0_COMMAND);
        stream.extend_from_slice(&[0x02, 0, 2, b'a', b'b']);
        assert_eq!(guard.check(&stream), Err(ChunkError::ShortCommand(1)));
        let mut guard = ChunkGuard::new(ChunkLimits::default());
        // "ab", 1.0, null.
        let mut stream = full_header(3, 0, 15, AMF0_COMMAND);
        stream.extend_from_slice(&[0x02, 0, 2, b'a', b'b', 0x00]);
        stream.extend_from_slice(&1f64.to_be_bytes());
        stream.push(0x05);
        guard.check(&stream).unwrap();
    }

    #[test]
    fn chunk_streams_are_bounded() {
        let limits = ChunkLimits {
            max_chunk_streams: 2,
            ..ChunkLimits::default()
        };
        let mut guard = ChunkGuard::new(limits);
        let stream: Vec<u8> = (3..6).flat_map(|c| full_header(c, 0, 0, 9)).collect();
        assert_eq!(
            guard.check(&stream),
            Err(ChunkError::TooManyChunkStreams(2))
        );
    }
}
