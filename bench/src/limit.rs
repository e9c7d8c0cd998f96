//! `rtcdn-bench limit`: this machine's raw forwarding limit on one core, the fan-out rtcdn does
//! without any protocol. One socket receives 1,200-byte RTP-shaped packets; for each, the
//! forwarder rewrites the SSRC and seals the packet with AES-128-GCM in place (ring, its own key
//! per destination, as SRTP AEAD_AES_128_GCM does) for each of M destinations, and sends the M
//! copies with `sendmmsg` in batches to M sockets that another thread drains. Every rtcdn figure
//! can then be quoted as a ratio to this baseline measured on the same machine in the same run.
//!
//! `--gso` measures the baseline with UDP GSO, as rtcdn sends with `media.gso`: the packets
//! come in frames of `--frame-packets` (the last one with the marker bit), each destination's
//! sealed copies of a frame are laid out back to back, and at the frame's end each destination
//! gets one send carrying the whole frame with a `UDP_SEGMENT` control message (still batched by
//! `sendmmsg`, one entry per destination); the kernel cuts it into datagrams.

use std::mem::{size_of, zeroed};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

use crate::stats::thread_cpu;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LimitOptions {
    /// Destinations per ingress packet (players per stream).
    pub fanout: usize,
    /// Measured seconds (after a short warm-up).
    pub seconds: f64,
    /// Bytes of every ingress packet (RTP header included).
    pub packet_size: usize,
    /// Packets per `sendmmsg`.
    pub batch: usize,
    /// The core to pin the forwarder to (`None`: don't pin).
    pub core: Option<usize>,
    /// Seal every copy with AES-128-GCM (else copy only).
    pub crypto: bool,
    /// Send each destination's copies of a frame as one UDP GSO send.
    pub gso: bool,
    /// Packets per frame (the producer marks every this many); what GSO coalesces.
    pub frame_packets: usize,
    /// Ingress packets per second, sent a frame at a time (`None`: as fast as the forwarder
    /// takes them). A stream's rate puts the baseline at the node's load: the forwarder and the
    /// destinations' reader then sleep between frames and are woken, as a node and its players
    /// are below saturation, which costs the kernel more per packet than a saturated loop.
    pub ingress_pps: Option<f64>,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            fanout: 100,
            seconds: 3.0,
            packet_size: 1200,
            batch: 32,
            core: Some(0),
            crypto: true,
            gso: false,
            frame_packets: 8,
            ingress_pps: None,
        }
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Default)]
pub struct LimitReport {
    /// Destinations per ingress packet.
    pub fanout: usize,
    /// Bytes per ingress packet.
    pub packet_size: usize,
    /// Packets per `sendmmsg`.
    pub batch: usize,
    /// Whether copies were sealed.
    pub crypto: bool,
    /// Whether each destination's frame left as one GSO send.
    pub gso: bool,
    /// Packets per frame.
    pub frame_packets: usize,
    /// The paced ingress rate, if any (see [`LimitOptions::ingress_pps`]).
    pub ingress_pps: Option<f64>,
    /// The core the forwarder ran on, if pinned.
    pub core: Option<usize>,
    /// Wall seconds measured.
    pub seconds: f64,
    /// Ingress packets forwarded in the window.
    pub ingress_packets: u64,
    /// Packets sent (ingress × fan-out) in the window.
    pub forwarded_packets: u64,
    /// Forwarded packets per second of wall time.
    pub forwarded_pps: f64,
    /// Wall nanoseconds per forwarded packet (1e9 / forwarded_pps).
    pub wall_ns_per_packet: f64,
    /// The forwarder thread's CPU nanoseconds per forwarded packet.
    pub cpu_ns_per_packet: f64,
    /// Forwarded packets per second per fully used core (1e9 / cpu_ns_per_packet).
    pub pps_per_core: f64,
    /// The forwarder's CPU use in the window (1.0 is one core).
    pub forwarder_cpu: f64,
    /// Sent packets the drain thread did not receive (dropped by the kernel), over the run.
    pub egress_loss: f64,
}

impl LimitReport {
    /// Players of a 250 + 50 packets/s stream one core could serve at this rate.
    pub fn players_per_core(&self) -> f64 {
        self.pps_per_core / 300.0
    }

    /// As a flat JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "fanout": self.fanout,
            "packet_size": self.packet_size,
            "batch": self.batch,
            "crypto": if self.crypto { "aes-128-gcm" } else { "none" },
            "gso": self.gso,
            "frame_packets": self.frame_packets,
            "ingress_pps": self.ingress_pps,
            "core": self.core,
            "seconds": self.seconds,
            "ingress_packets": self.ingress_packets,
            "forwarded_packets": self.forwarded_packets,
            "forwarded_pps": self.forwarded_pps.round(),
            "wall_ns_per_packet": round1(self.wall_ns_per_packet),
            "cpu_ns_per_packet": round1(self.cpu_ns_per_packet),
            "pps_per_core": self.pps_per_core.round(),
            "players_per_core_at_300pps": self.players_per_core().round(),
            "forwarder_cpu": round3(self.forwarder_cpu),
            "egress_loss": self.egress_loss,
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Cores this process may run on.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cores`; false when the kernel refuses.
pub fn pin_to(cores: &[usize]) -> bool {
    if cores.is_empty() {
        return false;
    }
    // SAFETY: as above; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn set_int_option(fd: RawFd, level: libc::c_int, option: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: a valid fd and a c_int option of the right length.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn big_buffers(socket: &UdpSocket, bytes: libc::c_int) {
    let fd = socket.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if !set_int_option(fd, libc::SOL_SOCKET, force, bytes) {
            set_int_option(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*addr.ip()).to_be(),
    };
    sa
}

fn local_v4(socket: &UdpSocket) -> anyhow::Result<SocketAddrV4> {
    match socket.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(a),
        other => bail!("not IPv4: {other}"),
    }
}

/// Runs one measurement (blocking: call it off any async runtime).
pub fn measure(options: &LimitOptions) -> anyhow::Result<LimitReport> {
    if options.fanout == 0
        || options.batch == 0
        || options.packet_size < 12 + 16
        || options.packet_size > 1400
    {
        bail!("limit: fan-out and batch must be positive and the packet size 28..=1400");
    }
    if options.frame_packets == 0 {
        bail!("limit: a frame has at least one packet");
    }
    if options
        .ingress_pps
        .is_some_and(|pps| !(pps.is_finite() && pps >= 1.0))
    {
        bail!("limit: the ingress rate is at least 1 packet/s");
    }
    let ingress = UdpSocket::bind("127.0.0.1:0").context("bind the ingress socket")?;
    big_buffers(&ingress, 8 << 20);
    ingress.set_read_timeout(Some(Duration::from_millis(50)))?;
    let ingress_addr = local_v4(&ingress)?;
    let mut sinks = Vec::with_capacity(options.fanout);
    for _ in 0..options.fanout {
        let sink = UdpSocket::bind("127.0.0.1:0").context("bind a destination socket")?;
        sink.set_nonblocking(true)?;
        big_buffers(&sink, 1 << 20);
        sinks.push(sink);
    }
    let destinations: Vec<libc::sockaddr_in> = sinks
        .iter()
        .map(|s| local_v4(s).map(sockaddr))
        .collect::<anyhow::Result<_>>()?;
    let out = UdpSocket::bind("127.0.0.1:0")?;
    big_buffers(&out, 8 << 20);

    let cores = allowed_cores();
    let forwarder_core = options.core.filter(|c| cores.contains(c));
    let others: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|c| Some(*c) != forwarder_core)
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let processed = Arc::new(AtomicU64::new(0));
    let drained = Arc::new(AtomicU64::new(0));

    // The drain: every destination socket, through epoll.
    let drain = {
        let stop = stop.clone();
        let drained = drained.clone();
        let others = others.clone();
        std::thread::Builder::new()
            .name("limit-drain".into())
            .spawn(move || drain_loop(sinks, &stop, &drained, &others))?
    };
    // The producer: keeps a few packets waiting at the ingress so the forwarder never idles,
    // without flooding it.
    let producer = {
        let stop = stop.clone();
        let processed = processed.clone();
        let size = options.packet_size;
        let frame = options.frame_packets as u64;
        // Paced: one frame every `frame / pps` seconds, its packets back to back.
        let frame_interval = options
            .ingress_pps
            .map(|pps| Duration::from_secs_f64(frame as f64 / pps));
        let others = others.clone();
        std::thread::Builder::new()
            .name("limit-producer".into())
            .spawn(move || {
                pin_to(&others);
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the producer socket");
                let mut packet = vec![0u8; size];
                packet[0] = 0x80;
                packet[1] = 96;
                let mut sent = 0u64;
                let mut next_frame = Instant::now();
                while !stop.load(Relaxed) {
                    if let Some(interval) = frame_interval.filter(|_| sent.is_multiple_of(frame)) {
                        let now = Instant::now();
                        if next_frame > now {
                            std::thread::sleep(next_frame - now);
                        }
                        next_frame += interval;
                    } else if frame_interval.is_none()
                        && sent.saturating_sub(processed.load(Relaxed)) >= 48
                    {
                        std::thread::yield_now();
                        continue;
                    }
                    // The marker bit ends a frame of `frame` packets.
                    packet[1] = 96 | if sent % frame == frame - 1 { 0x80 } else { 0 };
                    packet[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
                    packet[4..8].copy_from_slice(&((sent as u32).wrapping_mul(3000)).to_be_bytes());
                    packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                    for (i, b) in packet[12..].iter_mut().enumerate() {
                        *b = (i as u8).wrapping_add(sent as u8);
                    }
                    if socket.send_to(&packet, ingress_addr).is_ok() {
                        sent += 1;
                    }
                }
            })?
    };

    let forwarder = {
        let options = options.clone();
        let stop = stop.clone();
        let processed = processed.clone();
        std::thread::Builder::new()
            .name("limit-forwarder".into())
            .spawn(move || {
                forward_loop(
                    &options,
                    forwarder_core,
                    ingress,
                    out,
                    destinations,
                    &stop,
                    &processed,
                )
            })?
    };
    let result = forwarder
        .join()
        .map_err(|_| anyhow::anyhow!("the forwarder panicked"));
    stop.store(true, Relaxed);
    let _ = producer.join();
    let _ = drain.join();
    let ForwardResult {
        mut report,
        sent_total,
    } = result??;
    let received = drained.load(Relaxed);
    report.egress_loss = if sent_total == 0 {
        0.0
    } else {
        1.0 - (received as f64 / sent_total as f64).min(1.0)
    };
    Ok(report)
}

/// `SOL_UDP`'s `UDP_SEGMENT` option (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;

/// Whether an RTP packet carries the marker bit (the last of a frame).
fn packet_marked(packet: &[u8]) -> bool {
    packet.len() > 1 && packet[1] & 0x80 != 0
}

struct ForwardResult {
    report: LimitReport,
    /// Packets sent over the whole run, warm-up included (for the egress loss).
    sent_total: u64,
}

#[allow(clippy::too_many_arguments)]
fn forward_loop(
    options: &LimitOptions,
    core: Option<usize>,
    ingress: UdpSocket,
    out: UdpSocket,
    destinations: Vec<libc::sockaddr_in>,
    stop: &AtomicBool,
    processed: &AtomicU64,
) -> anyhow::Result<ForwardResult> {
    if let Some(core) = core {
        pin_to(&[core]);
    }
    let fanout = destinations.len();
    let size = options.packet_size;
    let batch = options.batch;
    let keys: Vec<LessSafeKey> = (0..fanout)
        .map(|d| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(d as u64 ^ 0x5a5a_5a5a).to_be_bytes());
            key[8..].copy_from_slice(&rand::random::<u64>().to_be_bytes());
            LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).expect("a 16-byte key"))
        })
        .collect();
    let salts: Vec<[u8; 12]> = (0..fanout).map(|_| rand::random()).collect();
    let ssrcs: Vec<u32> = (0..fanout).map(|_| rand::random()).collect();

    // Ingress: recvmmsg into 16 buffers.
    const IN: usize = 16;
    let mut in_bufs = vec![[0u8; 1500]; IN];
    // SAFETY: plain-data arrays, filled before use.
    let mut in_iov: Vec<libc::iovec> = in_bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut in_msgs: Vec<libc::mmsghdr> = (0..IN).map(|_| unsafe { zeroed() }).collect();
    for (m, iov) in in_msgs.iter_mut().zip(in_iov.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // Egress: a batch of sealed copies, each with its destination.
    let slot = size + 16;
    let mut out_bufs = vec![0u8; slot * batch];
    let mut out_addrs: Vec<libc::sockaddr_in> = vec![destinations[0]; batch];
    let mut out_iov: Vec<libc::iovec> = (0..batch)
        .map(|i| libc::iovec {
            iov_base: out_bufs[i * slot..].as_mut_ptr().cast(),
            iov_len: slot,
        })
        .collect();
    let mut out_msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { zeroed() }).collect();
    for i in 0..batch {
        out_msgs[i].msg_hdr.msg_iov = &mut out_iov[i];
        out_msgs[i].msg_hdr.msg_iovlen = 1;
        out_msgs[i].msg_hdr.msg_name = (&mut out_addrs[i] as *mut libc::sockaddr_in).cast();
        out_msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    let in_fd = ingress.as_raw_fd();
    let out_fd = out.as_raw_fd();
    // GSO: each destination's sealed copies of the current frame, back to back (every copy is
    // `slot` bytes: the producer's packets are all `size`), and the sendmmsg entries that
    // send them, each with its UDP_SEGMENT message.
    let seg = if options.crypto { slot } else { size };
    let max_segments = (65_000 / seg).min(64);
    let mut frame_bufs = vec![
        0u8;
        if options.gso {
            fanout * max_segments * seg
        } else {
            0
        }
    ];
    let mut in_frame = 0usize;
    let mut gso_iov: Vec<libc::iovec> = (0..batch)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect();
    let mut gso_control = vec![[0u64; 4]; batch];
    let mut gso_msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { zeroed() }).collect();
    for i in 0..batch {
        // SAFETY: the control area is u64-aligned and has room for a cmsghdr and a u16.
        unsafe {
            let cmsg = gso_control[i].as_mut_ptr().cast::<libc::cmsghdr>();
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            libc::CMSG_DATA(cmsg)
                .cast::<u16>()
                .write_unaligned(seg as u16);
        }
        let h = &mut gso_msgs[i].msg_hdr;
        h.msg_iov = &mut gso_iov[i];
        h.msg_iovlen = 1;
        h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_control = gso_control[i].as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic.
        h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
    }
    let mut gso_addrs = destinations.clone();
    // Sends the frame so far: one GSO send per destination, `batch` per sendmmsg.
    let mut send_frames = |in_frame: &mut usize, forwarded: &mut u64, frame_bufs: &mut [u8]| {
        let n = *in_frame;
        let mut d = 0;
        while d < fanout {
            let k = (fanout - d).min(batch);
            for e in 0..k {
                gso_iov[e].iov_base = frame_bufs[(d + e) * max_segments * seg..]
                    .as_mut_ptr()
                    .cast();
                gso_iov[e].iov_len = n * seg;
                gso_msgs[e].msg_hdr.msg_name =
                    (&mut gso_addrs[d + e] as *mut libc::sockaddr_in).cast();
            }
            let mut done = 0;
            while done < k {
                // SAFETY: the entries point at live buffers, addresses and control data.
                let sent = unsafe {
                    libc::sendmmsg(
                        out_fd,
                        gso_msgs[done..].as_mut_ptr(),
                        (k - done) as libc::c_uint,
                        0,
                    )
                };
                if sent <= 0 {
                    break;
                }
                done += sent as usize;
            }
            *forwarded += (done * n) as u64;
            d += k;
        }
        *in_frame = 0;
    };

    let warmup = Duration::from_millis(300);
    let measured = Duration::from_secs_f64(options.seconds.max(0.1));
    let started = Instant::now();
    let mut window: Option<(Instant, Duration, u64, u64)> = None;
    let (mut ingress_count, mut forwarded) = (0u64, 0u64);
    let mut pending = 0usize;
    let send_batch = |pending: &mut usize, forwarded: &mut u64, out_msgs: &mut [libc::mmsghdr]| {
        let mut done = 0;
        while done < *pending {
            // SAFETY: the messages point at live buffers and addresses owned by this frame.
            let n = unsafe {
                libc::sendmmsg(
                    out_fd,
                    out_msgs[done..].as_mut_ptr(),
                    (*pending - done) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        *forwarded += done as u64;
        *pending = 0;
    };
    loop {
        let now = Instant::now();
        match window {
            None if now - started >= warmup => {
                window = Some((now, thread_cpu(), ingress_count, forwarded))
            }
            Some((t0, _, _, _)) if now - t0 >= measured => break,
            _ => {}
        }
        if stop.load(Relaxed) {
            break;
        }
        // SAFETY: the headers point at live buffers; the timeout comes from SO_RCVTIMEO.
        let n = unsafe {
            libc::recvmmsg(
                in_fd,
                in_msgs.as_mut_ptr(),
                IN as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        for m in 0..n as usize {
            let len = (in_msgs[m].msg_len as usize).min(size);
            let packet = &in_bufs[m][..len];
            let seq = u16::from_be_bytes([packet[2], packet[3]]);
            for d in 0..fanout {
                let buf = if options.gso {
                    let at = (d * max_segments + in_frame) * seg;
                    &mut frame_bufs[at..at + seg]
                } else {
                    &mut out_bufs[pending * slot..(pending + 1) * slot]
                };
                buf[..len].copy_from_slice(packet);
                buf[8..12].copy_from_slice(&ssrcs[d].to_be_bytes());
                let sealed = if options.crypto {
                    // The SRTP GCM nonce: salt XOR (SSRC, ROC, SEQ).
                    let mut nonce = salts[d];
                    for (i, b) in ssrcs[d].to_be_bytes().iter().enumerate() {
                        nonce[2 + i] ^= b;
                    }
                    nonce[10] ^= (seq >> 8) as u8;
                    nonce[11] ^= seq as u8;
                    let (header, body) = buf[..len].split_at_mut(12);
                    let tag = keys[d]
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&*header),
                            body,
                        )
                        .expect("seal");
                    buf[len..len + 16].copy_from_slice(tag.as_ref());
                    len + 16
                } else {
                    len
                };
                if options.gso {
                    continue;
                }
                out_iov[pending].iov_len = sealed;
                out_addrs[pending] = destinations[d];
                pending += 1;
                if pending == batch {
                    send_batch(&mut pending, &mut forwarded, &mut out_msgs);
                }
            }
            ingress_count += 1;
            if options.gso {
                in_frame += 1;
                if packet_marked(&in_bufs[m][..len]) || in_frame == max_segments {
                    send_frames(&mut in_frame, &mut forwarded, &mut frame_bufs);
                }
            }
        }
        if pending > 0 {
            send_batch(&mut pending, &mut forwarded, &mut out_msgs);
        }
        processed.fetch_add(n as u64, Relaxed);
    }
    let end = Instant::now();
    let cpu_end = thread_cpu();
    let Some((t0, cpu0, in0, fwd0)) = window else {
        bail!("limit: the measurement never started")
    };
    let seconds = (end - t0).as_secs_f64();
    let forwarded_packets = forwarded - fwd0;
    let cpu = (cpu_end - cpu0).as_nanos() as f64;
    let pps = forwarded_packets as f64 / seconds;
    let cpu_ns = if forwarded_packets == 0 {
        0.0
    } else {
        cpu / forwarded_packets as f64
    };
    let report = LimitReport {
        fanout,
        packet_size: size,
        batch,
        crypto: options.crypto,
        gso: options.gso,
        frame_packets: options.frame_packets,
        ingress_pps: options.ingress_pps,
        core,
        seconds,
        ingress_packets: ingress_count - in0,
        forwarded_packets,
        forwarded_pps: pps,
        wall_ns_per_packet: if pps > 0.0 { 1e9 / pps } else { 0.0 },
        cpu_ns_per_packet: cpu_ns,
        pps_per_core: if cpu_ns > 0.0 { 1e9 / cpu_ns } else { 0.0 },
        forwarder_cpu: cpu / 1e9 / seconds,
        egress_loss: 0.0,
    };
    Ok(ForwardResult {
        report,
        sent_total: forwarded,
    })
}

fn drain_loop(sinks: Vec<UdpSocket>, stop: &AtomicBool, drained: &AtomicU64, cores: &[usize]) {
    pin_to(cores);
    // SAFETY: epoll on sockets this thread owns for its whole life.
    let epoll = unsafe { libc::epoll_create1(0) };
    for (i, sink) in sinks.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, sink.as_raw_fd(), &mut event) };
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut bufs = vec![[0u8; 1500]; 32];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..32).map(|_| unsafe { zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut last_round = false;
    loop {
        let n = unsafe {
            libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as libc::c_int, 20)
        };
        for e in &events[..n.max(0) as usize] {
            let fd = sinks[e.u64 as usize].as_raw_fd();
            loop {
                let got = unsafe {
                    libc::recvmmsg(
                        fd,
                        msgs.as_mut_ptr(),
                        32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if got <= 0 {
                    break;
                }
                drained.fetch_add(got as u64, Relaxed);
            }
        }
        if last_round && n <= 0 {
            break;
        }
        if stop.load(Relaxed) {
            last_round = true;
        }
    }
    unsafe { libc::close(epoll) };
}

/// Runs `repeat` measurements; returns them all and their median.
pub fn measure_repeated(
    options: &LimitOptions,
    repeat: usize,
) -> anyhow::Result<(Vec<LimitReport>, LimitReport)> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(measure(options)?);
    }
    let med =
        |f: fn(&LimitReport) -> f64| crate::stats::median(&runs.iter().map(f).collect::<Vec<_>>());
    let mut median = runs[0].clone();
    median.seconds = med(|r| r.seconds);
    median.ingress_packets = med(|r| r.ingress_packets as f64) as u64;
    median.forwarded_packets = med(|r| r.forwarded_packets as f64) as u64;
    median.forwarded_pps = med(|r| r.forwarded_pps);
    median.wall_ns_per_packet = med(|r| r.wall_ns_per_packet);
    median.cpu_ns_per_packet = med(|r| r.cpu_ns_per_packet);
    median.pps_per_core = med(|r| r.pps_per_core);
    median.forwarder_cpu = med(|r| r.forwarder_cpu);
    median.egress_loss = med(|r| r.egress_loss);
    Ok((runs, median))
}

/// Human text for a report.
pub fn describe(r: &LimitReport) -> String {
    let core = r
        .core
        .map_or("unpinned".to_owned(), |c| format!("core {c}"));
    format!(
        "fan-out {} x {} B, {} per sendmmsg{}, {}, {core}: {:.0} forwarded packets/s ({:.0} ns wall/packet), {:.0} ns CPU/packet = {:.0} packets/s per core ({:.0} players at 300 packets/s); forwarder CPU {:.0}%, egress loss {:.2}%",
        r.fanout,
        r.packet_size,
        r.batch,
        if r.gso {
            format!(", GSO: a frame of {} per destination in one send", r.frame_packets)
        } else {
            String::new()
        } + &r
            .ingress_pps
            .map_or(String::new(), |pps| format!(", ingress paced at {pps} packets/s")),
        if r.crypto { "AES-128-GCM (ring) per destination" } else { "copy only" },
        r.forwarded_pps,
        r.wall_ns_per_packet,
        r.cpu_ns_per_packet,
        r.pps_per_core,
        r.players_per_core(),
        r.forwarder_cpu * 100.0,
        r.egress_loss * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_limit_run_forwards_and_seals() {
        let options = LimitOptions {
            fanout: 4,
            seconds: 0.2,
            core: None,
            ..LimitOptions::default()
        };
        let r = measure(&options).expect("measures");
        assert!(r.forwarded_packets > 0, "{r:?}");
        assert_eq!(
            r.forwarded_packets,
            r.ingress_packets * 4,
            "every ingress packet goes to every destination"
        );
        assert!(r.cpu_ns_per_packet > 0.0);
    }

    #[test]
    fn a_short_gso_run_delivers_every_datagram() {
        let options = LimitOptions {
            fanout: 4,
            seconds: 0.2,
            core: None,
            gso: true,
            frame_packets: 5,
            ..LimitOptions::default()
        };
        let r = measure(&options).expect("measures");
        assert!(r.forwarded_packets > 0, "{r:?}");
        // The window may cut a frame: its copies are counted when the frame is sent.
        let expected = r.ingress_packets * 4;
        assert!(
            r.forwarded_packets.abs_diff(expected) <= 2 * 5 * 4,
            "{} forwarded for {} ingress",
            r.forwarded_packets,
            r.ingress_packets
        );
        // A GSO send arriving unsegmented would count as one datagram of five.
        assert!(r.egress_loss < 0.5, "the kernel segments every send: {r:?}");
    }

    /// A paced ingress comes a frame at a time at the rate asked, not as fast as the forwarder
    /// takes it (which would be tens of thousands of packets in the window).
    #[test]
    fn a_paced_run_forwards_the_rate_it_was_given() {
        let options = LimitOptions {
            fanout: 2,
            seconds: 0.5,
            core: None,
            gso: true,
            frame_packets: 4,
            ingress_pps: Some(400.0),
            ..LimitOptions::default()
        };
        let r = measure(&options).expect("measures");
        assert_eq!(r.ingress_pps, Some(400.0));
        // 200 packets in 0.5 s; a sleep that overslept loses some, none is sent early.
        assert!(
            (100..=200 + 2 * 4).contains(&r.ingress_packets),
            "{} ingress packets in {:.2} s",
            r.ingress_packets,
            r.seconds
        );
        assert!(r.forwarded_packets > 0, "{r:?}");
        let bad = LimitOptions {
            ingress_pps: Some(0.5),
            ..options
        };
        assert!(measure(&bad).is_err());
    }
}
