//! No input, however broken, makes an agent panic or answer.

mod common;

use std::time::Instant;

use common::{addr, client_creds, server_creds, CLIENT, SERVER};
use ice::{IceControllingAgent, IceError, IceLiteAgent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn agents(now: Instant) -> (IceLiteAgent, IceControllingAgent) {
    let lite = IceLiteAgent::new(server_creds(), client_creds(), now);
    let controlling =
        IceControllingAgent::new(client_creds(), server_creds(), vec![addr(SERVER)], 1, now);
    (lite, controlling)
}

/// A valid check, and the server's valid answer to it.
fn valid_pair(now: Instant) -> (Vec<u8>, Vec<u8>) {
    let (mut lite, mut controlling) = agents(now);
    let check = controlling.poll_transmit().unwrap().contents;
    lite.handle_packet(now, addr(CLIENT), &check).unwrap();
    (check, lite.poll_transmit().unwrap().contents)
}

fn feed(now: Instant, packet: &[u8]) {
    let (mut lite, mut controlling) = agents(now);
    let _ = controlling.poll_transmit();
    if lite.handle_packet(now, addr(CLIENT), packet).is_err() {
        assert_eq!(lite.poll_transmit(), None, "no answer to rejected input");
    }
    let _ = controlling.handle_packet(now, addr(SERVER), packet);
}

#[test]
fn random_bytes() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(99);
    for _ in 0..2_000 {
        let len = rng.gen_range(0..200);
        let mut packet: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Make half of them pass the first-byte and magic-cookie demux.
        if len >= 20 && rng.gen_bool(0.5) {
            packet[0] &= 0x01;
            packet[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            let body = u16::try_from(len - 20).unwrap();
            packet[2..4].copy_from_slice(&body.to_be_bytes());
        }
        feed(now, &packet);
    }
}

#[test]
fn truncations_and_bit_flips_of_valid_messages() {
    let now = Instant::now();
    let (check, response) = valid_pair(now);
    let mut rng = StdRng::seed_from_u64(100);
    for valid in [&check, &response] {
        for len in 0..valid.len() {
            feed(now, &valid[..len]);
        }
        for _ in 0..2_000 {
            let mut packet = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..packet.len());
                packet[i] ^= 1 << rng.gen_range(0..8);
            }
            feed(now, &packet);
        }
    }
}

#[test]
fn typical_non_stun_traffic_is_not_stun() {
    let now = Instant::now();
    let (mut lite, _) = agents(now);
    let dtls_hello = [0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
    let rtp = [0x80u8; 40];
    for packet in [
        &[][..],
        &dtls_hello,
        &rtp,
        b"GET / HTTP/1.1\r\n\r\n\0\0\0\0",
    ] {
        assert!(!ice::is_stun(packet));
        assert_eq!(
            lite.handle_packet(now, addr(CLIENT), packet),
            Err(IceError::NotStun)
        );
    }
}

#[cfg(feature = "fuzzing")]
#[test]
fn fuzz_entry_point_survives_corpus() {
    let now = Instant::now();
    let (check, response) = valid_pair(now);
    for data in [&[][..], &[1], &check, &response, &check[..30]] {
        ice::fuzzing::fuzz_stun(data);
    }
}
