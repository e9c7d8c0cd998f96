use super::*;
use crate::rtmp::flv::{parse_video, VideoTag};
use rtp::av1_obu::leb128;

/// `obu_extension_flag` in an OBU header.
const OBU_EXTENSION: u8 = 0x04;

const PT: u8 = 45;

/// The temporal units of an IVF file: a 32-byte file header, then each unit after a 12-byte
/// header whose first four bytes are its size.
pub(crate) fn ivf_units(ivf: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = &ivf[32..];
    let mut units = Vec::new();
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        units.push(rest[12..12 + size].to_vec());
        rest = &rest[12 + size..];
    }
    units
}

/// libaom's 60 temporal units of ffmpeg's test pattern, 320x240 4:2:0, a keyframe every 30:
/// `ffmpeg -f lavfi -i testsrc=size=320x240:rate=30 -frames:v 60 -pix_fmt yuv420p -c:v
/// libaom-av1 -cpu-used 8 -usage realtime -g 30 -f ivf`.
pub(crate) fn testsrc() -> Vec<Vec<u8>> {
    ivf_units(include_bytes!("../testdata/testsrc_320x240_av1.ivf"))
}

/// One keyframe of the pattern at 160x120 in RGB (profile 1, 4:4:4, identity matrix): the same
/// command with `size=160x120`, `-frames:v 1` and no `-pix_fmt`.
fn testsrc_rgb() -> Vec<u8> {
    ivf_units(include_bytes!("../testdata/testsrc_160x120_gbrp_av1.ivf")).remove(0)
}

/// A unit's OBUs in the low overhead format: each one's type and bytes.
fn obus(unit: &[u8]) -> Vec<(u8, &[u8])> {
    let mut rest = unit;
    let mut obus = Vec::new();
    while let Some(&header) = rest.first() {
        assert!(header & OBU_HAS_SIZE != 0, "every OBU has its size");
        let header_len = if header & OBU_EXTENSION != 0 { 2 } else { 1 };
        let (len, used) = leb128(&rest[header_len..]).unwrap();
        let end = header_len + used + len as usize;
        obus.push(((header >> 3) & 0x0F, &rest[..end]));
        rest = &rest[end..];
    }
    obus
}

/// `unit` without its temporal delimiters, byte for byte.
pub(crate) fn without_delimiters(unit: &[u8]) -> Vec<u8> {
    obus(unit)
        .into_iter()
        .filter(|(kind, _)| *kind != OBU_TEMPORAL_DELIMITER)
        .flat_map(|(_, bytes)| bytes.to_vec())
        .collect()
}

/// A unit's OBUs as RTP elements (no temporal delimiters): without their size fields, as
/// senders should, or with them (`keep_sizes`), as they may.
pub(crate) fn elements(unit: &[u8], keep_sizes: bool) -> Vec<Vec<u8>> {
    obus(unit)
        .into_iter()
        .filter(|(kind, _)| *kind != OBU_TEMPORAL_DELIMITER)
        .map(|(_, obu)| {
            if keep_sizes {
                return obu.to_vec();
            }
            let header_len = if obu[0] & OBU_EXTENSION != 0 { 2 } else { 1 };
            let (_, used) = leb128(&obu[header_len..]).unwrap();
            let mut element = vec![obu[0] & !OBU_HAS_SIZE];
            element.extend_from_slice(&obu[1..header_len]);
            element.extend_from_slice(&obu[header_len + used..]);
            element
        })
        .collect()
}

pub(crate) fn rtp(seq: u16, time: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, if marker { 0x80 } else { 0 } | PT];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&time.to_be_bytes());
    p.extend_from_slice(&7u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A sender's packetizer: elements packed into payloads of at most `mtu` bytes, OBUs cut
/// across packets where they do not fit; W says the count when it is 3 or less.
pub(crate) struct Packetizer {
    pub(crate) seq: u16,
    pub(crate) mtu: usize,
}

impl Packetizer {
    pub(crate) fn unit(&mut self, elements: &[Vec<u8>], time: u32) -> Vec<Vec<u8>> {
        let starts_sequence = elements
            .iter()
            .any(|e| (e[0] >> 3) & 0x0F == OBU_SEQUENCE_HEADER);
        let mut packets = Vec::new();
        let mut current: Vec<&[u8]> = Vec::new();
        let mut continues = false;
        let mut room = self.mtu - 1;
        for element in elements {
            let mut rest = &element[..];
            loop {
                if room < 4 {
                    let n = starts_sequence && packets.is_empty();
                    packets.push(self.packet(&current, continues, false, n, time));
                    (current, continues, room) = (Vec::new(), false, self.mtu - 1);
                }
                let take = rest.len().min(room - 3);
                current.push(&rest[..take]);
                room -= take + 3;
                rest = &rest[take..];
                if rest.is_empty() {
                    break;
                }
                let n = starts_sequence && packets.is_empty();
                packets.push(self.packet(&current, continues, true, n, time));
                (current, continues, room) = (Vec::new(), true, self.mtu - 1);
            }
        }
        let n = starts_sequence && packets.is_empty();
        packets.push(self.packet(&current, continues, false, n, time));
        packets.last_mut().unwrap()[1] |= 0x80;
        packets
    }

    fn packet(&mut self, elements: &[&[u8]], z: bool, y: bool, n: bool, time: u32) -> Vec<u8> {
        let w = if elements.len() <= 3 {
            elements.len()
        } else {
            0
        };
        let mut payload =
            vec![u8::from(z) << 7 | u8::from(y) << 6 | (w as u8) << 4 | u8::from(n) << 3];
        for (i, element) in elements.iter().enumerate() {
            if w == 0 || i + 1 < elements.len() {
                let mut size = [0; LEB128_MAX];
                let used = write_leb128(element.len(), &mut size);
                payload.extend_from_slice(&size[..used]);
            }
            payload.extend_from_slice(element);
        }
        self.seq = self.seq.wrapping_add(1);
        rtp(self.seq, time, false, &payload)
    }
}

fn run(d: &mut RtpAv1ToFlv, packets: &[Vec<u8>]) -> Vec<FlvVideo> {
    let mut out = Vec::new();
    for p in packets {
        d.push(p, |v| out.push(v));
    }
    out
}

/// The units that came out: (time, keyframe, OBUs).
fn units(out: &[FlvVideo]) -> Vec<(u32, bool, Vec<u8>)> {
    out.iter()
        .filter_map(|v| match v {
            FlvVideo::Frame {
                timestamp_ms,
                keyframe,
                body,
            } => {
                let Ok(VideoTag::Av1Frame { keyframe: k, obus }) = parse_video(body) else {
                    panic!("{body:?}")
                };
                assert_eq!(k, *keyframe);
                Some((*timestamp_ms, *keyframe, obus.to_vec()))
            }
            FlvVideo::Config { .. } => None,
        })
        .collect()
}

/// The sequence starts that came out: each one's record and picture size.
fn configs(out: &[FlvVideo]) -> Vec<(Av1Config<'_>, Option<(u16, u16)>)> {
    out.iter()
        .filter_map(|v| match v {
            FlvVideo::Config { body, size, .. } => {
                let Ok(VideoTag::Av1Config(config)) = parse_video(body) else {
                    panic!("{body:?}")
                };
                Some((config, *size))
            }
            FlvVideo::Frame { .. } => None,
        })
        .collect()
}

/// Every unit of `input` packetized, at 30 fps from RTP time 9000.
fn packetize(input: &[Vec<u8>], mtu: usize, keep_sizes: bool) -> Vec<Vec<Vec<u8>>> {
    let mut packetizer = Packetizer { seq: 65_500, mtu };
    input
        .iter()
        .enumerate()
        .map(|(i, unit)| packetizer.unit(&elements(unit, keep_sizes), 9000 + i as u32 * 3000))
        .collect()
}

#[test]
fn libaom_units_come_back_whole_without_temporal_delimiters_after_their_av1c() {
    let input = testsrc();
    assert_eq!(input.len(), 60);
    for (mtu, keep_sizes) in [(1200, false), (300, true), (40, false)] {
        let packets = packetize(&input, mtu, keep_sizes);
        let mut d = RtpAv1ToFlv::new(PT);
        let out = run(&mut d, &packets.concat());
        // One sequence start, first: the keyframe at 30 repeats the same sequence header.
        assert!(matches!(
            out[0],
            FlvVideo::Config {
                timestamp_ms: 0,
                ..
            }
        ));
        let configs = configs(&out);
        assert_eq!(configs.len(), 1, "mtu {mtu}");
        let (config, size) = configs[0];
        assert_eq!(size, Some((320, 240)));
        let sequence_obu = obus(&input[0])[1];
        assert_eq!(sequence_obu.0, OBU_SEQUENCE_HEADER);
        assert_eq!(
            config,
            Av1Config {
                seq_profile: 0,
                seq_level_idx_0: 0,
                seq_tier_0: false,
                high_bitdepth: false,
                twelve_bit: false,
                monochrome: false,
                chroma_subsampling_x: true,
                chroma_subsampling_y: true,
                chroma_sample_position: 0,
                initial_presentation_delay_minus_one: None,
                config_obus: sequence_obu.1,
            }
        );
        let got = units(&out);
        assert_eq!(got.len(), 60, "mtu {mtu}");
        for (i, (time, key, obus)) in got.iter().enumerate() {
            assert_eq!(*obus, without_delimiters(&input[i]), "unit {i}, mtu {mtu}");
            assert_eq!(*key, i.is_multiple_of(30), "unit {i}");
            assert_eq!(*time, (i as u32 * 3000) / 90);
        }
        assert_eq!(
            (d.counters.frames, d.counters.keyframes, d.counters.losses),
            (60, 2, 0)
        );
        assert!(!d.layered() && !d.waits_for_keyframe());
    }
}

#[test]
fn a_loss_waits_for_the_next_keyframe_and_a_new_sequence_header_sends_a_new_start() {
    let input = testsrc();
    let mut packets = packetize(&input, 1200, false);
    // Unit 4's packet twice (the copy is dropped); unit 5's first packet lost.
    let copy = packets[4][0].clone();
    packets[4].push(copy);
    packets[5].remove(0);
    let mut d = RtpAv1ToFlv::new(PT);
    let mut out = run(&mut d, &packets.concat());
    let got: Vec<usize> = units(&out)
        .iter()
        .map(|(time, _, _)| (*time as usize * 90).div_ceil(3000))
        .collect();
    let expected: Vec<usize> = (0..5).chain(30..60).collect();
    assert_eq!(got, expected);
    assert_eq!(d.counters.losses, 1);
    // Another sequence header (RGB at 160x120, profile 1), then the first one again: a start
    // before each.
    let last = packets[59].last().unwrap();
    let mut packetizer = Packetizer {
        seq: u16::from_be_bytes([last[2], last[3]]),
        mtu: 1200,
    };
    let rgb = testsrc_rgb();
    let more = [
        packetizer.unit(&elements(&rgb, false), 9000 + 60 * 3000),
        packetizer.unit(&elements(&input[30], false), 9000 + 61 * 3000),
    ];
    out.extend(run(&mut d, &more.concat()));
    let configs = configs(&out);
    assert_eq!(configs.len(), 3);
    let (config, size) = configs[1];
    assert_eq!(size, Some((160, 120)));
    assert_eq!(
        (
            config.seq_profile,
            config.chroma_subsampling_x,
            config.chroma_subsampling_y,
            config.high_bitdepth
        ),
        (1, false, false, false)
    );
    assert_eq!(configs[2].1, Some((320, 240)));
    let got = units(&out);
    assert_eq!(got[got.len() - 2].2, without_delimiters(&rgb));
}

#[test]
fn a_reordered_packet_waits_for_the_next_keyframe() {
    let input = testsrc();
    let mut packets = packetize(&input, 200, false);
    assert!(packets[0].len() > 2);
    packets[0].swap(1, 2);
    let mut d = RtpAv1ToFlv::new(PT);
    let out = run(&mut d, &packets.concat());
    let got = units(&out);
    assert_eq!(got.len(), 30);
    assert!(got[0].1, "from the keyframe at 30");
    assert_eq!(got[0].2, without_delimiters(&input[30]));
}

#[test]
fn spatial_layers_are_noted_and_only_the_base_layer_goes_on() {
    let input = testsrc();
    let mut with_layer = elements(&input[0], false);
    // A frame of spatial layer 1 (extension: temporal 0, spatial 1).
    with_layer.push(vec![
        OBU_FRAME << 3 | OBU_EXTENSION,
        1 << 3,
        0x10,
        0x20,
        0x30,
    ]);
    let packets = Packetizer { seq: 1, mtu: 1200 }.unit(&with_layer, 0);
    let mut d = RtpAv1ToFlv::new(PT);
    let out = run(&mut d, &packets);
    assert_eq!(units(&out)[0].2, without_delimiters(&input[0]));
    assert!(d.layered());
}

#[test]
fn garbage_cut_fragments_and_huge_units_are_dropped_without_panic() {
    let mut d = RtpAv1ToFlv::new(PT);
    let packets = [
        vec![0x80, 1],
        rtp(1, 0, true, &[]),
        rtp(2, 0, true, &[0x00]),
        // A length past the end; an endless LEB128; a forbidden bit.
        rtp(3, 90, true, &[0x00, 0x7F, 8]),
        rtp(
            4,
            180,
            true,
            &[0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ),
        rtp(5, 270, true, &[0x10, 0x80 | OBU_FRAME << 3]),
        // A fragment whose start was never seen; one that never ends.
        rtp(6, 360, true, &[0x90, OBU_FRAME << 3, 1]),
        rtp(7, 450, false, &[0x50, OBU_FRAME << 3, 1]),
        rtp(8, 450, true, &[0x10, OBU_FRAME << 3, 1]),
        // An OBU's size field past its element; an extension byte missing.
        rtp(9, 540, true, &[0x10, OBU_FRAME << 3 | OBU_HAS_SIZE, 9, 1]),
        rtp(10, 630, true, &[0x10, OBU_FRAME << 3 | OBU_EXTENSION]),
    ];
    assert!(run(&mut d, &packets).is_empty());
    assert!(d.waits_for_keyframe());
    // A fragment that never stops growing.
    let mut out = Vec::new();
    let chunk = [&[0x50, OBU_FRAME << 3][..], &[0u8; 1200]].concat();
    d.push(&rtp(11, 720, false, &chunk), |v| out.push(v));
    let middle = [&[0xD0][..], &[0u8; 1200]].concat();
    for seq in 12..(12 + (MAX_ACCESS_UNIT / 1200) as u16 + 2) {
        d.push(&rtp(seq, 720, false, &middle), |v| out.push(v));
        assert!(d.fragment.len() <= MAX_ACCESS_UNIT);
    }
    assert!(out.is_empty());
    // Then a keyframe comes through.
    let input = testsrc();
    let packets = Packetizer {
        seq: 20_000,
        mtu: 1200,
    }
    .unit(&elements(&input[0], false), 900);
    let got = units(&run(&mut d, &packets));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, without_delimiters(&input[0]));
}

#[test]
fn the_fuzz_body_runs_on_its_av1_seed() {
    // A 160x120 keyframe in fragments, an inter frame, the keyframe with a packet lost, a
    // frame with a spatial layer, the keyframe again: payload type 45.
    crate::fuzzing::fuzz_rtp_flv(include_bytes!(
        "../../../fuzz/corpus/seed-rtp_flv/av1_key_loss_layers"
    ));
}
