//! rtcdn's WebRTC client side over WHIP/WHEP: an offer, a controlling ICE agent, DTLS and SRTP
//! from the same crates the server uses, on a tokio UDP socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsTransport};
use rtcdn::sdp::{self, Codec, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack, Setup};
use rtp::srtp::SrtpContext;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::http::{self, HttpError};

/// Payload type the client uses for Opus.
pub const AUDIO_PT: u8 = 111;
/// Payload type the client uses for VP8.
pub const VIDEO_PT: u8 = 96;

/// Why a client session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Signalling failed or was refused.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server's answer did not parse.
    #[error("bad answer: {0}")]
    Answer(String),
    /// A local socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// ICE or DTLS did not complete.
    #[error("connection failed: {0}")]
    Connect(String),
    /// SRTP failed.
    #[error("SRTP: {0}")]
    Srtp(String),
}

/// Publish or play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// WHIP: send audio and video.
    Publish,
    /// WHEP: receive audio and video.
    Play,
}

/// What a client session has seen, for load reports.
#[derive(Debug, Default, Clone)]
pub struct ClientCounters {
    /// SRTP packets sent.
    pub rtp_sent: u64,
    /// SRTP packets received and decrypted.
    pub rtp_received: u64,
    /// RTCP packets received (compound packets count once).
    pub rtcp_received: u64,
    /// Packets that failed SRTP.
    pub srtp_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Connecting,
    Connected,
    Ended(String),
}

struct PeerState {
    ice: IceControllingAgent,
    dtls: Option<DtlsTransport>,
    srtp_tx: Option<SrtpContext>,
    srtp_rx: Option<SrtpContext>,
    remote: Option<SocketAddr>,
    counters: ClientCounters,
}

/// One WHIP or WHEP session.
pub struct ClientSession {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<PeerState>>,
    status: watch::Receiver<Status>,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
    rtcp: mpsc::UnboundedReceiver<Vec<u8>>,
    resource: String,
    stun_username: String,
    task: tokio::task::JoinHandle<()>,
    send_buf: Vec<u8>,
    /// SSRC of the audio track (publish).
    pub audio_ssrc: u32,
    /// SSRC of the video track (publish).
    pub video_ssrc: u32,
}

fn offer_codecs(kind: MediaKind) -> Vec<Codec> {
    let fb = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    match kind {
        MediaKind::Audio => {
            let mut opus = Codec::new(AUDIO_PT, "opus", 48000, Some(2));
            opus.fmtp = Some("minptime=10;useinbandfec=1".into());
            vec![opus]
        }
        MediaKind::Video => {
            let mut vp8 = Codec::new(VIDEO_PT, "VP8", 90000, None);
            vp8.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
            vec![vp8]
        }
    }
}

impl ClientSession {
    /// Publishes (`Mode::Publish`, to `{base}/whip/{stream}`) or plays (`{base}/whep/{stream}`)
    /// and returns once ICE and DTLS are up.
    pub async fn connect(
        base: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
    ) -> Result<ClientSession, ClientError> {
        let local = IceCredentials::random(&mut rand::thread_rng());
        let audio_ssrc = rand::random::<u32>() | 1;
        let video_ssrc = rand::random::<u32>() | 1;
        let direction = if mode == Mode::Publish { Direction::SendOnly } else { Direction::RecvOnly };
        let media = [(MediaKind::Audio, "0", audio_ssrc), (MediaKind::Video, "1", video_ssrc)]
            .into_iter()
            .map(|(kind, mid, ssrc)| OfferMedia {
                mid: mid.into(),
                kind,
                direction,
                codecs: offer_codecs(kind),
                send: (mode == Mode::Publish).then(|| SendTrack {
                    ssrc,
                    cname: "rtcdn-bench".into(),
                    stream_id: "bench".into(),
                    track_id: format!("bench-{mid}"),
                    rtx_ssrc: None,
                }),
            })
            .collect();
        let offer = sdp::write_offer(&OfferParams {
            ice_ufrag: local.ufrag.clone(),
            ice_pwd: local.pwd.clone(),
            fingerprint: Fingerprint(certificate.fingerprint()),
            media,
        });
        let path = if mode == Mode::Publish { "whip" } else { "whep" };
        let url = format!("{}/{path}/{stream}", base.trim_end_matches('/'));
        let response = http::post_offer(&url, offer).await?;
        let resource = http::resolve(&url, response.location.as_deref().unwrap_or(""));
        let answer = sdp::parse(&response.body).map_err(|e| ClientError::Answer(e.to_string()))?;
        let remote_fingerprint = answer.fingerprint.ok_or_else(|| ClientError::Answer("no fingerprint".into()))?.0;
        // The answerer's setup decides: active means it is the DTLS client, so we serve.
        let role = if answer.setup == Setup::Passive { DtlsRole::Client } else { DtlsRole::Server };
        let candidates: Vec<SocketAddr> = answer.candidates.iter().copied().filter(SocketAddr::is_ipv4).collect();
        if candidates.is_empty() {
            return Err(ClientError::Answer("no IPv4 host candidate".into()));
        }
        let socket = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
        let remote_ice = IceCredentials { ufrag: answer.ice_ufrag.clone(), pwd: answer.ice_pwd.clone() };
        let stun_username = format!("{}:{}", remote_ice.ufrag, local.ufrag);
        let ice = IceControllingAgent::new(local, remote_ice, candidates, rand::random(), Instant::now());
        let state = Arc::new(Mutex::new(PeerState {
            ice,
            dtls: None,
            srtp_tx: None,
            srtp_rx: None,
            remote: None,
            counters: ClientCounters::default(),
        }));
        let (status_tx, mut status) = watch::channel(Status::Connecting);
        let (received_tx, received) = mpsc::unbounded_channel();
        let (rtcp_tx, rtcp) = mpsc::unbounded_channel();
        let driver = Driver {
            socket: socket.clone(),
            state: state.clone(),
            status: status_tx,
            received: received_tx,
            rtcp: rtcp_tx,
            certificate: certificate.clone(),
            remote_fingerprint,
            role,
        };
        let task = tokio::spawn(driver.run());
        let wait = async {
            loop {
                match &*status.borrow_and_update() {
                    Status::Connected => return Ok(()),
                    Status::Ended(why) => return Err(ClientError::Connect(why.clone())),
                    Status::Connecting => {}
                }
                if status.changed().await.is_err() {
                    return Err(ClientError::Connect("driver stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                task.abort();
                return Err(e);
            }
            Err(_) => {
                task.abort();
                return Err(ClientError::Connect(format!("not connected within {timeout:?}")));
            }
        }
        Ok(ClientSession {
            socket,
            state,
            status,
            received,
            rtcp,
            resource,
            stun_username,
            task,
            send_buf: vec![0u8; 2048],
            audio_ssrc,
            video_ssrc,
        })
    }

    /// The WHIP/WHEP resource URL.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Encrypts and sends one plaintext RTP packet.
    pub async fn send_rtp(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let (len, remote) = {
            let mut state = self.state.lock().expect("client state lock");
            let remote = state.remote.ok_or_else(|| ClientError::Connect("no remote".into()))?;
            let srtp = state.srtp_tx.as_mut().ok_or_else(|| ClientError::Connect("not keyed".into()))?;
            self.send_buf[..packet.len()].copy_from_slice(packet);
            let len = srtp.protect_rtp(&mut self.send_buf, packet.len()).map_err(|e| ClientError::Srtp(e.to_string()))?;
            state.counters.rtp_sent += 1;
            (len, remote)
        };
        self.socket.send_to(&self.send_buf[..len], remote).await?;
        Ok(())
    }

    /// Encrypts (SRTCP) and sends one plaintext RTCP packet (compound or not).
    pub async fn send_rtcp(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let (len, remote) = {
            let mut state = self.state.lock().expect("client state lock");
            let remote = state.remote.ok_or_else(|| ClientError::Connect("no remote".into()))?;
            let srtp = state.srtp_tx.as_mut().ok_or_else(|| ClientError::Connect("not keyed".into()))?;
            let buf = self.send_buf.get_mut(..packet.len()).ok_or_else(|| ClientError::Srtp("RTCP packet too long".into()))?;
            buf.copy_from_slice(packet);
            let len = srtp.protect_rtcp(&mut self.send_buf, packet.len()).map_err(|e| ClientError::Srtp(e.to_string()))?;
            (len, remote)
        };
        self.socket.send_to(&self.send_buf[..len], remote).await?;
        Ok(())
    }

    /// Sends `bytes` unchanged from this session's socket to the server address ICE nominated:
    /// tests send garbage from a real peer's address this way.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let remote = self.remote_addr().ok_or_else(|| ClientError::Connect("no remote".into()))?;
        self.socket.send_to(bytes, remote).await?;
        Ok(())
    }

    /// The server address ICE nominated.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.state.lock().expect("client state lock").remote
    }

    /// The USERNAME this client's STUN checks carry, `<server ufrag>:<client ufrag>`: tests
    /// forge requests for this session with it.
    pub fn stun_username(&self) -> &str {
        &self.stun_username
    }

    /// The next decrypted RTP packet (play), or `None` on timeout or when the session ended.
    pub async fn recv_rtp(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(timeout, self.received.recv()).await.ok().flatten()
    }

    /// The next decrypted RTCP compound packet from the server, or `None` on timeout.
    pub async fn recv_rtcp(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(timeout, self.rtcp.recv()).await.ok().flatten()
    }

    /// Why the session ended, if it did (server closed DTLS, ICE consent lost).
    pub fn ended(&self) -> Option<String> {
        match &*self.status.borrow() {
            Status::Ended(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Waits until the session ends, up to `timeout`; returns the reason.
    pub async fn wait_ended(&mut self, timeout: Duration) -> Option<String> {
        let wait = async {
            loop {
                if let Status::Ended(why) = &*self.status.borrow_and_update() {
                    return Some(why.clone());
                }
                if self.status.changed().await.is_err() {
                    return Some("driver stopped".to_owned());
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Counters so far.
    pub fn counters(&self) -> ClientCounters {
        self.state.lock().expect("client state lock").counters.clone()
    }

    /// Ends the session with an HTTP DELETE on its resource.
    pub async fn close(self) -> Result<(), ClientError> {
        let result = http::request(hyper::Method::DELETE, &self.resource, None, String::new()).await;
        self.task.abort();
        let response = result?;
        if !response.status.is_success() {
            return Err(HttpError::Status { status: response.status.as_u16(), body: response.body }.into());
        }
        Ok(())
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Driver {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<PeerState>>,
    status: watch::Sender<Status>,
    received: mpsc::UnboundedSender<Vec<u8>>,
    rtcp: mpsc::UnboundedSender<Vec<u8>>,
    certificate: DtlsCertificate,
    remote_fingerprint: [u8; 32],
    role: DtlsRole,
}

impl Driver {
    async fn run(self) {
        let (dtls_tx, mut dtls_rx) = mpsc::unbounded_channel::<DtlsEvent>();
        let mut buf = vec![0u8; 2048];
        loop {
            let (transmits, deadline) = match self.step(&dtls_tx) {
                Ok(step) => step,
                Err(why) => {
                    let _ = self.status.send(Status::Ended(why));
                    return;
                }
            };
            for (destination, contents) in transmits {
                let _ = self.socket.send_to(&contents, destination).await;
            }
            let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1)).into());
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { continue };
                    self.handle_datagram(from, &mut buf[..len]);
                }
                Some(event) = dtls_rx.recv() => {
                    if let Some(why) = self.handle_dtls(event).await {
                        let _ = self.status.send(Status::Ended(why));
                        return;
                    }
                }
                _ = sleep => {
                    self.state.lock().expect("client state lock").ice.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Drains the ICE agent: datagrams to send, the next deadline, and an error when it gave up.
    #[allow(clippy::type_complexity)]
    fn step(&self, dtls_tx: &mpsc::UnboundedSender<DtlsEvent>) -> Result<(Vec<(SocketAddr, Vec<u8>)>, Option<Instant>), String> {
        let mut state = self.state.lock().expect("client state lock");
        let mut transmits = Vec::new();
        while let Some(t) = state.ice.poll_transmit() {
            transmits.push((t.destination, t.contents));
        }
        while let Some(event) = state.ice.poll_event() {
            match event {
                IceEvent::Connected { remote } | IceEvent::RemoteChanged { remote } => {
                    state.remote = Some(remote);
                    if state.dtls.is_none() {
                        let tx = dtls_tx.clone();
                        state.dtls = Some(DtlsTransport::start(
                            &tokio::runtime::Handle::current(),
                            self.role,
                            &self.certificate,
                            self.remote_fingerprint,
                            Arc::new(move |event| {
                                let _ = tx.send(event);
                            }),
                        ));
                    }
                }
                IceEvent::Disconnected { reason } => return Err(format!("ICE: {reason:?}")),
                _ => {}
            }
        }
        Ok((transmits, state.ice.poll_timeout()))
    }

    fn handle_datagram(&self, from: SocketAddr, data: &mut [u8]) {
        let mut state = self.state.lock().expect("client state lock");
        match data.first() {
            Some(0..=3) => {
                let _ = state.ice.handle_packet(Instant::now(), from, data);
            }
            Some(20..=63) => {
                if let Some(dtls) = &state.dtls {
                    dtls.handle_record(data);
                }
            }
            Some(128..=191) => {
                let is_rtcp = rtp::rtcp::is_rtcp(data);
                let Some(srtp) = state.srtp_rx.as_mut() else { return };
                let result = if is_rtcp { srtp.unprotect_rtcp(data) } else { srtp.unprotect_rtp(data) };
                match result {
                    Ok(len) if is_rtcp => {
                        state.counters.rtcp_received += 1;
                        let _ = self.rtcp.send(data[..len].to_vec());
                    }
                    Ok(len) => {
                        state.counters.rtp_received += 1;
                        let _ = self.received.send(data[..len].to_vec());
                    }
                    Err(_) => state.counters.srtp_failures += 1,
                }
            }
            _ => {}
        }
    }

    /// Handles a DTLS event; returns a reason when the session is over.
    async fn handle_dtls(&self, event: DtlsEvent) -> Option<String> {
        match event {
            DtlsEvent::Transmit(record) => {
                let remote = self.state.lock().expect("client state lock").remote;
                if let Some(remote) = remote {
                    let _ = self.socket.send_to(&record, remote).await;
                }
                None
            }
            DtlsEvent::Connected(keys) => {
                let mut state = self.state.lock().expect("client state lock");
                let rx = SrtpContext::new(keys.profile, &keys.remote_key, &keys.remote_salt);
                let tx = SrtpContext::new(keys.profile, &keys.local_key, &keys.local_salt);
                match (rx, tx) {
                    (Ok(rx), Ok(tx)) => {
                        state.srtp_rx = Some(rx);
                        state.srtp_tx = Some(tx);
                        let _ = self.status.send(Status::Connected);
                        None
                    }
                    (Err(e), _) | (_, Err(e)) => Some(format!("SRTP keys: {e}")),
                }
            }
            DtlsEvent::Failed(e) => Some(format!("DTLS failed: {e}")),
            DtlsEvent::Closed => Some("DTLS closed by the server".into()),
        }
    }
}
