//! In-memory handshakes between two `DtlsTransport`s on a shared multi-thread runtime, driven
//! from plain threads the way the reactor does it.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rtp::srtp::SrtpProfile;

use super::*;
use crate::media::Datagram;

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One end: its transport, its non-`Transmit` events and every datagram it sent.
struct End {
    transport: Arc<DtlsTransport>,
    events: std_mpsc::Receiver<DtlsEvent>,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl End {
    fn next_event(&self, within: Duration) -> Option<DtlsEvent> {
        self.events.recv_timeout(within).ok()
    }

    fn expect_connected(&self) -> SrtpKeyingMaterial {
        match self.next_event(WAIT) {
            Some(DtlsEvent::Connected(keys)) => keys,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    fn expect_failed(&self) -> DtlsError {
        match self.next_event(WAIT) {
            Some(DtlsEvent::Failed(e)) => e,
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

/// Starts a transport whose `Transmit`s go to `out` (forwarded by a thread to whatever transport
/// is put in the returned slot) and whose other events go to a channel.
fn start_end(
    rt: &tokio::runtime::Runtime,
    role: DtlsRole,
    cert: &DtlsCertificate,
    remote_fp: [u8; 32],
    config: DtlsTransportConfig,
) -> (End, Arc<Mutex<Option<Weak<DtlsTransport>>>>) {
    let (ev_tx, ev_rx) = std_mpsc::channel();
    let (out_tx, out_rx) = std_mpsc::channel::<Vec<u8>>();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sent2 = Arc::clone(&sent);
    let ev_tx = Mutex::new(ev_tx);
    let out_tx = Mutex::new(out_tx);
    let on_event: Arc<dyn Fn(DtlsEvent) + Send + Sync> = Arc::new(move |ev| match ev {
        DtlsEvent::Transmit(d) => {
            sent2.lock().unwrap().push(d.clone());
            let _ = out_tx.lock().unwrap().send(d);
        }
        other => {
            let _ = ev_tx.lock().unwrap().send(other);
        }
    });
    let transport = Arc::new(DtlsTransport::start_with_config(
        rt.handle(),
        role,
        cert,
        remote_fp,
        config,
        on_event,
    ));
    // The "reactor": a plain thread delivering this end's datagrams to the peer.
    let peer: Arc<Mutex<Option<Weak<DtlsTransport>>>> = Arc::new(Mutex::new(None));
    let peer2 = Arc::clone(&peer);
    std::thread::spawn(move || {
        let mut backlog = Vec::new();
        while let Ok(d) = out_rx.recv() {
            backlog.push(d);
            let target = peer2.lock().unwrap().as_ref().and_then(Weak::upgrade);
            if let Some(t) = target {
                for d in backlog.drain(..) {
                    t.handle_record(&d);
                }
            }
        }
    });
    (
        End {
            transport,
            events: ev_rx,
            sent,
        },
        peer,
    )
}

struct Pair {
    client: End,
    server: End,
}

fn pair_with(
    rt: &tokio::runtime::Runtime,
    client_cfg: DtlsTransportConfig,
    server_cfg: DtlsTransportConfig,
    client_expects: Option<[u8; 32]>,
    server_expects: Option<[u8; 32]>,
) -> Pair {
    let client_cert = DtlsCertificate::generate().unwrap();
    let server_cert = DtlsCertificate::generate().unwrap();
    let (server, server_peer) = start_end(
        rt,
        DtlsRole::Server,
        &server_cert,
        server_expects.unwrap_or(client_cert.fingerprint()),
        server_cfg,
    );
    let (client, client_peer) = start_end(
        rt,
        DtlsRole::Client,
        &client_cert,
        client_expects.unwrap_or(server_cert.fingerprint()),
        client_cfg,
    );
    *client_peer.lock().unwrap() = Some(Arc::downgrade(&server.transport));
    *server_peer.lock().unwrap() = Some(Arc::downgrade(&client.transport));
    Pair { client, server }
}

fn pair(rt: &tokio::runtime::Runtime) -> Pair {
    pair_with(rt, Default::default(), Default::default(), None, None)
}

fn cm_only() -> DtlsTransportConfig {
    DtlsTransportConfig {
        srtp_profiles: vec![SrtpProfile::Aes128CmHmacSha1_80],
        ..Default::default()
    }
}

#[test]
fn handshake_connects_and_keys_mirror() {
    let rt = runtime();
    let t0 = Instant::now();
    let p = pair(&rt);
    let c = p.client.expect_connected();
    let s = p.server.expect_connected();
    eprintln!("handshake took {:?}", t0.elapsed());
    assert_eq!(c.profile, SrtpProfile::AeadAes128Gcm);
    assert_eq!(s.profile, SrtpProfile::AeadAes128Gcm);
    assert_eq!((c.local_key.len(), c.local_salt.len()), (16, 12));
    assert_eq!(c.local_key, s.remote_key);
    assert_eq!(c.local_salt, s.remote_salt);
    assert_eq!(c.remote_key, s.local_key);
    assert_eq!(c.remote_salt, s.local_salt);
    assert_ne!(c.local_key, c.remote_key);
    // Debug never shows keys.
    assert!(!format!("{c:?}").contains(&format!("{:?}", c.local_key)));
    for (who, end) in [("client", &p.client), ("server", &p.server)] {
        let sent = end.sent.lock().unwrap();
        let max = sent.iter().map(Vec::len).max().unwrap();
        eprintln!("{who}: {} datagrams, largest {max} B", sent.len());
        assert!(max <= 1200 + 64, "{who} datagram of {max} B");
        assert!(sent.iter().all(|d| Datagram::classify(d) == Datagram::Dtls));
    }
    // No further events while idle.
    assert!(p.client.next_event(Duration::from_millis(300)).is_none());
    assert!(p.server.next_event(Duration::from_millis(10)).is_none());
}

fn srtp_profile(p: SrtpProfile) -> webrtc_srtp::protection_profile::ProtectionProfile {
    match p {
        SrtpProfile::AeadAes128Gcm => {
            webrtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm
        }
        SrtpProfile::Aes128CmHmacSha1_80 => {
            webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
        }
    }
}

fn srtp_roundtrip(sender: &SrtpKeyingMaterial, receiver: &SrtpKeyingMaterial) {
    use webrtc_srtp::context::Context;
    let profile = srtp_profile(sender.profile);
    let mut enc = Context::new(&sender.local_key, &sender.local_salt, profile, None, None).unwrap();
    let mut dec = Context::new(
        &receiver.remote_key,
        &receiver.remote_salt,
        profile,
        None,
        None,
    )
    .unwrap();
    let mut wrong = Context::new(
        &receiver.local_key,
        &receiver.local_salt,
        profile,
        None,
        None,
    )
    .unwrap();
    for seq in 0u16..20 {
        let mut pkt = vec![0x80, 96];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend((0..100u8).map(|i| i ^ seq as u8));
        let protected = enc.encrypt_rtp(&pkt).unwrap();
        assert_ne!(&protected[12..], &pkt[12..]);
        assert_eq!(&dec.decrypt_rtp(&protected).unwrap()[..], &pkt[..]);
        assert!(
            wrong.decrypt_rtp(&protected).is_err(),
            "decrypted with the wrong direction's key"
        );
    }
}

fn srtp_cross_check(
    client_cfg: DtlsTransportConfig,
    server_cfg: DtlsTransportConfig,
    want: SrtpProfile,
) {
    let rt = runtime();
    let p = pair_with(&rt, client_cfg, server_cfg, None, None);
    let c = p.client.expect_connected();
    let s = p.server.expect_connected();
    assert_eq!((c.profile, s.profile), (want, want));
    srtp_roundtrip(&c, &s);
    srtp_roundtrip(&s, &c);
}

#[test]
fn exported_keys_interoperate_with_webrtc_srtp_gcm() {
    srtp_cross_check(
        Default::default(),
        Default::default(),
        SrtpProfile::AeadAes128Gcm,
    );
}

#[test]
fn exported_keys_interoperate_with_webrtc_srtp_cm() {
    srtp_cross_check(
        Default::default(),
        cm_only(),
        SrtpProfile::Aes128CmHmacSha1_80,
    );
    // Also when the client is the one restricting.
    srtp_cross_check(
        cm_only(),
        Default::default(),
        SrtpProfile::Aes128CmHmacSha1_80,
    );
}

#[test]
fn no_common_srtp_profile_fails() {
    let rt = runtime();
    let gcm_only = DtlsTransportConfig {
        srtp_profiles: vec![SrtpProfile::AeadAes128Gcm],
        ..Default::default()
    };
    let p = pair_with(&rt, gcm_only, cm_only(), None, None);
    let s = p.server.expect_failed();
    let c = p.client.expect_failed();
    eprintln!("server: {s}; client: {c}");
}

#[test]
fn client_rejects_wrong_server_fingerprint() {
    let rt = runtime();
    let p = pair_with(
        &rt,
        Default::default(),
        Default::default(),
        Some([7; 32]),
        None,
    );
    assert_eq!(p.client.expect_failed(), DtlsError::FingerprintMismatch);
    // The server learns through the fatal bad_certificate alert.
    let s = p.server.expect_failed();
    assert!(matches!(s, DtlsError::Handshake(_)), "{s:?}");
}

#[test]
fn server_rejects_wrong_client_fingerprint() {
    let rt = runtime();
    let p = pair_with(
        &rt,
        Default::default(),
        Default::default(),
        None,
        Some([9; 32]),
    );
    assert_eq!(p.server.expect_failed(), DtlsError::FingerprintMismatch);
    let c = p.client.expect_failed();
    assert!(matches!(c, DtlsError::Handshake(_)), "{c:?}");
}

#[test]
fn close_notifies_peer() {
    let rt = runtime();
    let p = pair(&rt);
    p.client.expect_connected();
    p.server.expect_connected();
    let before = p.client.sent.lock().unwrap().len();
    p.client.transport.close();
    assert!(matches!(p.server.next_event(WAIT), Some(DtlsEvent::Closed)));
    // The closing side sent close_notify and reports nothing itself.
    assert!(p.client.next_event(Duration::from_millis(300)).is_none());
    assert!(p.client.sent.lock().unwrap().len() > before);
    // close() twice is harmless.
    p.client.transport.close();
}

#[test]
fn the_client_hands_over_to_its_own_record_layer_after_the_handshake() {
    let rt = runtime();
    let p = pair(&rt);
    p.client.expect_connected();
    p.server.expect_connected();
    // The client's dtls crate connection is gone; the server (which may still have to
    // retransmit its last flight) keeps its own.
    assert!(p.client.transport.established.get().is_some());
    assert!(p.server.transport.established.get().is_none());
    // A plaintext alert is not taken for the peer's close.
    p.client
        .transport
        .handle_record(&[21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 2, 0]);
    assert!(p.client.next_event(Duration::from_millis(200)).is_none());
}

#[test]
fn close_then_drop_still_sends_close_notify() {
    let rt = runtime();
    let Pair { client, server } = pair(&rt);
    server.expect_connected();
    client.expect_connected();
    server.transport.close();
    let End {
        transport, events, ..
    } = server;
    drop(transport);
    assert!(matches!(client.next_event(WAIT), Some(DtlsEvent::Closed)));
    assert!(events.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn drop_mid_handshake_stops_events() {
    let rt = runtime();
    let cert = DtlsCertificate::generate().unwrap();
    // A client with no peer: it keeps retransmitting its ClientHello.
    let (end, _peer) = start_end(&rt, DtlsRole::Client, &cert, [0; 32], Default::default());
    std::thread::sleep(Duration::from_millis(100));
    let End {
        transport,
        events,
        sent,
    } = end;
    drop(transport);
    let n = sent.lock().unwrap().len();
    assert!(n >= 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sent.lock().unwrap().len(), n, "retransmitted after drop");
    assert!(events.try_recv().is_err());
}

#[test]
fn handshake_timeout() {
    let rt = runtime();
    let cert = DtlsCertificate::generate().unwrap();
    let cfg = DtlsTransportConfig {
        handshake_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let (end, _peer) = start_end(&rt, DtlsRole::Client, &cert, [0; 32], cfg);
    assert_eq!(end.expect_failed(), DtlsError::Timeout);
    // The crate retransmits the flight on its own (1 s interval).
    assert!(end.sent.lock().unwrap().len() >= 2);
}

/// A ClientHello whose extension block ends with a 2-byte stub.
fn truncated_extension_client_hello() -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend([0x11; 32]); // random
    body.push(0); // session id
    body.push(0); // cookie
    body.extend([0x00, 0x02, 0xc0, 0x2b]); // cipher suites
    body.extend([0x01, 0x00]); // compression
    body.extend([0x00, 0x02, 0x00, 0x0a]); // extensions: 2 bytes, a lone type field
    let len = body.len() as u32;
    let mut hs = vec![1];
    hs.extend(&len.to_be_bytes()[1..]);
    hs.extend([0, 0]); // message_seq
    hs.extend([0, 0, 0]); // fragment_offset
    hs.extend(&len.to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn garbage() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        vec![],
        vec![22],
        vec![22, 0xfe, 0xfd],
        vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4],
        vec![20, 0xfe, 0xfd, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        vec![0xff; 3000],
        vec![0; 70_000],
    ];
    // Pseudo-random datagrams starting with a DTLS content type.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..200 {
        let len = 1 + (i * 7) % 300;
        let mut d = crate::fuzzing::pseudo_random_bytes(&mut x, len);
        d[0] = 20 + (d[0] % 44);
        if d.len() > 2 && i % 2 == 0 {
            d[1] = 0xfe;
            d[2] = 0xfd;
        }
        out.push(d);
    }
    out
}

#[test]
fn garbage_is_ignored_and_isolated() {
    let rt = runtime();
    // A bystander server that only ever sees garbage.
    let cert = DtlsCertificate::generate().unwrap();
    let (bystander, _peer) = start_end(&rt, DtlsRole::Server, &cert, [0; 32], Default::default());
    let p = pair(&rt);
    for d in garbage() {
        bystander.transport.handle_record(&d);
        p.server.transport.handle_record(&d);
    }
    p.client.expect_connected();
    p.server.expect_connected();
    // Garbage after connecting does not break the association either.
    for d in garbage() {
        p.server.transport.handle_record(&d);
        p.client.transport.handle_record(&d);
    }
    assert!(p.server.next_event(Duration::from_millis(300)).is_none());
    assert!(p.client.next_event(Duration::from_millis(10)).is_none());
    p.client.transport.close();
    assert!(matches!(p.server.next_event(WAIT), Some(DtlsEvent::Closed)));
    drop(bystander);
}

#[test]
fn malformed_client_hello_is_dropped_before_the_parser() {
    let rt = runtime();
    let cert = DtlsCertificate::generate().unwrap();
    let (bystander, _peer) = start_end(&rt, DtlsRole::Server, &cert, [0; 32], Default::default());
    let p = pair(&rt);
    for _ in 0..3 {
        bystander
            .transport
            .handle_record(&truncated_extension_client_hello());
        p.server
            .transport
            .handle_record(&truncated_extension_client_hello());
    }
    p.client.expect_connected();
    p.server.expect_connected();
    // Without the guard the dtls reader task panics and the handshake fails.
    assert!(bystander.next_event(Duration::from_millis(300)).is_none());
}

#[test]
fn keying_material_split() {
    let m: Vec<u8> = (0..56).collect();
    let c = SrtpKeyingMaterial::from_exported(SrtpProfile::AeadAes128Gcm, DtlsRole::Client, &m)
        .unwrap();
    let s = SrtpKeyingMaterial::from_exported(SrtpProfile::AeadAes128Gcm, DtlsRole::Server, &m)
        .unwrap();
    assert_eq!(c.local_key, (0..16).collect::<Vec<u8>>());
    assert_eq!(c.remote_key, (16..32).collect::<Vec<u8>>());
    assert_eq!(c.local_salt, (32..44).collect::<Vec<u8>>());
    assert_eq!(c.remote_salt, (44..56).collect::<Vec<u8>>());
    assert_eq!((s.local_key, s.local_salt), (c.remote_key, c.remote_salt));
    let m: Vec<u8> = (0..60).collect();
    let c =
        SrtpKeyingMaterial::from_exported(SrtpProfile::Aes128CmHmacSha1_80, DtlsRole::Client, &m)
            .unwrap();
    assert_eq!(c.local_salt, (32..46).collect::<Vec<u8>>());
    assert_eq!(c.remote_salt, (46..60).collect::<Vec<u8>>());
    assert!(SrtpKeyingMaterial::from_exported(
        SrtpProfile::Aes128CmHmacSha1_80,
        DtlsRole::Client,
        &m[..56]
    )
    .is_err());
}

#[test]
fn public_types_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<DtlsTransport>();
    check::<DtlsCertificate>();
    check::<DtlsEvent>();
    check::<DtlsError>();
}
