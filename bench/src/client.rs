//! rtcdn's WebRTC client side over WHIP/WHEP: an offer, a controlling ICE agent, DTLS and SRTP
//! from the same crates the server uses, on a tokio UDP socket or an ICE-TCP connection
//! ([`crate::link`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsTransport};
use rtcdn::media::Datagram;
use rtcdn::sdp::{
    self, Codec, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack,
    SessionDescription, Setup,
};
use rtp::srtp::SrtpContext;
use tokio::sync::{mpsc, watch};

use rtcdn::wcs_protocol::client::{media_session_id, WsClient, WsClientError};
use serde_json::{json, Value};

use crate::http::{self, HttpError};
use crate::link::{Link, Transport};
use crate::repair::{Repair, RepairCounts};

/// Payload type the client uses for Opus.
pub const AUDIO_PT: u8 = 111;
/// Payload type the client uses for VP8.
pub const VIDEO_PT: u8 = 96;
/// Payload type the client offers for VP8's retransmissions (RFC 4588) with
/// [`OfferOptions::rtx`].
pub const VIDEO_RTX_PT: u8 = 97;

/// What a session's offer asks for beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfferOptions {
    /// Offer rtx for video on [`VIDEO_RTX_PT`], as browsers do; a publisher also announces an
    /// RTX SSRC in `a=ssrc-group:FID`.
    pub rtx: bool,
    /// Offer transport-cc (the transport-wide sequence number extension, id
    /// [`TRANSPORT_CC_EXT_ID`], and its feedback), as browsers do: a node then numbers every
    /// packet it sends this client. The client sends no feedback.
    pub transport_cc: bool,
    /// Publish video as the simulcast layers [`SIMULCAST_RIDS`] (`a=rid`, `a=simulcast`), with
    /// the RTP stream id extensions [`RID_EXT_ID`] and [`REPAIRED_RID_EXT_ID`], as Chromium
    /// does for `sendEncodings`. The caller sends each layer's packets on an SSRC of its own
    /// with [`ClientSession::send_rtp`], the rid in its first packets.
    pub simulcast: bool,
    /// Play this simulcast layer: `?layer=` on WHEP, `custom.layer` in `playStream`.
    pub layer: Option<&'static str>,
    /// Connect over UDP, or over TCP to the answer's passive TCP candidate (not part of the
    /// offer: which of the answer's candidates the session uses).
    pub transport: Transport,
}

/// The simulcast layers an [`OfferOptions::simulcast`] publisher offers, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["l", "m", "h"];
/// The id the client offers the RTP stream id extension under (Chromium's).
pub const RID_EXT_ID: u8 = 10;
/// The id the client offers the repaired RTP stream id extension under (Chromium's).
pub const REPAIRED_RID_EXT_ID: u8 = 11;

/// The id the client offers the transport-wide sequence number extension under (Chromium's).
pub const TRANSPORT_CC_EXT_ID: u8 = 3;

/// Why a client session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Signalling failed or was refused.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// WebSocket signalling failed.
    #[error(transparent)]
    Ws(#[from] WsClientError),
    /// The server refused the stream over the WebSocket protocol (FAILED status).
    #[error("refused: {0}")]
    Refused(String),
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
    /// RTP packets dropped on arrival on purpose ([`ClientSession::lose_once`],
    /// [`ClientSession::enable_nack`]).
    pub rtp_lost: u64,
    /// Injected loss and its repair by NACKs; all zero unless [`ClientSession::enable_nack`].
    pub repair: RepairCounts,
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
    /// (SSRC, sequence number) of RTP packets to drop the next time they arrive.
    lose: Vec<(u32, u16)>,
    /// Random loss and NACKs, once enabled.
    repair: Option<Repair<rand::rngs::StdRng>>,
    /// SRTP that arrived while the DTLS task was still handing over the keys (the server's
    /// handshake may end, and its media start, before ours): read once the keys are in, as a
    /// browser's DTLS stack, which installs them before it reads on, would.
    early: Vec<Vec<u8>>,
    /// The negotiated transport-wide sequence number extension id, and what arrived with it.
    transport_cc: Option<(u8, rtp::twcc::TwccRecorder)>,
}

/// The most early SRTP datagrams kept; more are dropped.
const MAX_EARLY_SRTP: usize = 512;

/// How the session was negotiated, and how it is ended.
enum Signal {
    /// WHIP/WHEP: `DELETE` on the resource.
    Http,
    /// Flashphoner WebSocket: the socket stays open for the session's life; closing it (after
    /// `unPublishStream`/`stopStream`) ends the session.
    Ws {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    },
}

impl PeerState {
    /// The server address ICE nominated and the SRTP context to send to it with: an error
    /// until ICE and DTLS are done.
    fn keyed_sender(&mut self) -> Result<(SocketAddr, &mut SrtpContext), ClientError> {
        let remote = self
            .remote
            .ok_or_else(|| ClientError::Connect("no remote".into()))?;
        let srtp = self
            .srtp_tx
            .as_mut()
            .ok_or_else(|| ClientError::Connect("not keyed".into()))?;
        Ok((remote, srtp))
    }
}

/// What signalling produced: the answer and how to end the session.
struct Negotiated {
    answer: String,
    resource: String,
    signal: Signal,
}

/// One WHIP/WHEP or Flashphoner WebSocket session.
pub struct ClientSession {
    socket: Arc<Link>,
    state: Arc<Mutex<PeerState>>,
    status: watch::Receiver<Status>,
    status_tx: Arc<watch::Sender<Status>>,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
    rtcp: mpsc::UnboundedReceiver<Vec<u8>>,
    resource: String,
    signal: Signal,
    stun_username: String,
    task: tokio::task::JoinHandle<()>,
    send_buf: Vec<u8>,
    /// SSRC of the audio track (publish).
    pub audio_ssrc: u32,
    /// SSRC of the video track (publish).
    pub video_ssrc: u32,
    /// The video retransmission stream the answer negotiated: its payload type, and its SSRC
    /// (ours when publishing, the one the answer announced when playing).
    pub video_rtx: Option<(u8, u32)>,
}

/// The rid extensions of a simulcast publisher's video section; none otherwise.
fn simulcast_extmaps(
    kind: MediaKind,
    mode: Mode,
    options: OfferOptions,
) -> impl Iterator<Item = rtcdn::sdp::Extmap> {
    let wanted = options.simulcast && kind == MediaKind::Video && mode == Mode::Publish;
    [
        (RID_EXT_ID, rtcdn::sdp::EXT_RTP_STREAM_ID),
        (REPAIRED_RID_EXT_ID, rtcdn::sdp::EXT_REPAIRED_RTP_STREAM_ID),
    ]
    .into_iter()
    .filter(move |_| wanted)
    .map(|(id, uri)| rtcdn::sdp::Extmap {
        id,
        uri: uri.into(),
    })
}

/// Payload type a player offers H.264 under, after VP8 (as browsers offer both): it plays an
/// H.264 stream (an RTMP publisher's) and a VP8 one alike.
pub const H264_PT: u8 = 109;
/// Payload type a player offers VP9 (profile 0) under, after VP8 and H.264: it plays a VP9
/// stream (an RTMP `vp09` publisher's) too.
pub const VP9_PT: u8 = 98;
/// Payload type a player offers AV1 (profile 0) under, last, as Chrome does: it plays an AV1
/// stream (an RTMP `av01` publisher's) too.
pub const AV1_PT: u8 = 45;
/// Payload type a player offers H.265 (Main, up to level 6) under, after AV1: it plays an H.265
/// stream (an RTMP `hvc1` publisher's) too.
pub const H265_PT: u8 = 49;

fn offer_codecs(kind: MediaKind, mode: Mode, options: OfferOptions) -> Vec<Codec> {
    let fb = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    match kind {
        MediaKind::Audio => {
            let mut opus = Codec::new(AUDIO_PT, "opus", 48000, Some(2));
            opus.fmtp = Some("minptime=10;useinbandfec=1".into());
            if options.transport_cc {
                opus.rtcp_fb = fb(&["transport-cc"]);
            }
            vec![opus]
        }
        MediaKind::Video => {
            let mut vp8 = Codec::new(VIDEO_PT, "VP8", 90000, None);
            vp8.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
            if options.transport_cc {
                vp8.rtcp_fb.push("transport-cc".into());
            }
            vp8.rtx_pt = options.rtx.then_some(VIDEO_RTX_PT);
            let mut codecs = vec![vp8];
            if mode == Mode::Play {
                let mut h264 = Codec::new(H264_PT, "H264", 90000, None);
                h264.fmtp = Some(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                );
                h264.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
                codecs.push(h264);
                let mut vp9 = Codec::new(VP9_PT, "VP9", 90000, None);
                vp9.fmtp = Some("profile-id=0".into());
                vp9.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
                codecs.push(vp9);
                let mut av1 = Codec::new(AV1_PT, "AV1", 90000, None);
                av1.fmtp = Some("level-idx=5;profile=0;tier=0".into());
                av1.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
                codecs.push(av1);
                let mut h265 = Codec::new(H265_PT, "H265", 90000, None);
                h265.fmtp = Some("level-id=180;profile-id=1;tier-flag=0;tx-mode=SRST".into());
                h265.rtcp_fb = fb(&["nack", "nack pli", "ccm fir", "goog-remb"]);
                codecs.push(h265);
            }
            codecs
        }
    }
}

impl ClientSession {
    /// Publishes (`Mode::Publish`, to `{base}/whip/{stream}`) or plays (`{base}/whep/{stream}`)
    /// and returns once ICE and DTLS are up. A `307` from an origin is followed to its edge.
    pub async fn connect(
        base: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
    ) -> Result<ClientSession, ClientError> {
        Self::connect_with(
            base,
            mode,
            stream,
            certificate,
            timeout,
            OfferOptions::default(),
        )
        .await
    }

    /// [`ClientSession::connect`] with an offer that asks for more (e.g. rtx).
    pub async fn connect_with(
        base: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
        options: OfferOptions,
    ) -> Result<ClientSession, ClientError> {
        let offer = Offer::new(mode, certificate, options);
        let path = if mode == Mode::Publish {
            "whip"
        } else {
            "whep"
        };
        let mut url = format!("{}/{path}/{stream}", base.trim_end_matches('/'));
        if let (Mode::Play, Some(layer)) = (mode, options.layer) {
            url.push_str(&format!("?layer={layer}"));
        }
        let response = http::post_offer(&url, offer.sdp.clone()).await?;
        let resource = http::resolve(&response.url, response.location.as_deref().unwrap_or(""));
        Self::start(
            offer,
            Negotiated {
                answer: response.body,
                resource,
                signal: Signal::Http,
            },
            certificate,
            timeout,
        )
        .await
    }

    /// The same over the Flashphoner WebSocket protocol (`ws://host:port/`): `connection`,
    /// then `publishStream` or `playStream` with the offer, and the `setRemoteSDP` answer. The
    /// WebSocket stays open for the session's life, as with the Web SDK: when the server closes
    /// it, or reports the stream FAILED, STOPPED or UNPUBLISHED, the session ends.
    pub async fn connect_ws(
        ws_url: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
    ) -> Result<ClientSession, ClientError> {
        Self::connect_ws_custom(ws_url, mode, stream, certificate, timeout, None).await
    }

    /// [`ClientSession::connect_ws`] with `custom` in the `connection` message, as the SDK's
    /// `createSession({custom})` sends it (e.g. `{"token": ...}`).
    pub async fn connect_ws_custom(
        ws_url: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
        custom: Option<Value>,
    ) -> Result<ClientSession, ClientError> {
        let options = OfferOptions::default();
        Self::connect_ws_with(ws_url, mode, stream, certificate, timeout, custom, options).await
    }

    /// [`ClientSession::connect_ws_custom`] with an offer that asks for more (e.g. rtx).
    pub async fn connect_ws_with(
        ws_url: &str,
        mode: Mode,
        stream: &str,
        certificate: &DtlsCertificate,
        timeout: Duration,
        custom: Option<Value>,
        options: OfferOptions,
    ) -> Result<ClientSession, ClientError> {
        let offer = Offer::new(mode, certificate, options);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ws = WsClient::connect_with_tls(ws_url, timeout, None, custom).await?;
        let id = media_session_id();
        let published = mode == Mode::Publish;
        let mut request = json!({
            "mediaSessionId": id,
            "name": stream,
            "published": published,
            "hasVideo": true,
            "hasAudio": true,
            "status": "PENDING",
            "record": false,
            "mediaProvider": "WebRTC",
            "sdp": offer.sdp,
        });
        if let (Mode::Play, Some(layer)) = (mode, options.layer) {
            request["custom"] = json!({ "layer": layer });
        }
        ws.send(
            if published {
                "publishStream"
            } else {
                "playStream"
            },
            request,
        )
        .await?;
        let answer = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (message, data) = ws.next_within(left, "setRemoteSDP").await?;
            if message == "setRemoteSDP"
                && data.first().and_then(Value::as_str) == Some(id.as_str())
            {
                match data.get(1).and_then(Value::as_str) {
                    Some(sdp) => break sdp.to_owned(),
                    None => return Err(ClientError::Answer("setRemoteSDP without an SDP".into())),
                }
            }
            if message == "notifyStreamStatusEvent" && ws_status(&data, &id) == Some("FAILED") {
                return Err(ClientError::Refused(ws_info(&data)));
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<String>();
        let stream = stream.to_owned();
        let task = tokio::spawn(ws_keeper(ws, id, stream, published, stop_rx, ended_tx));
        let negotiated = Negotiated {
            answer,
            resource: ws_url.to_owned(),
            signal: Signal::Ws {
                stop: Some(stop_tx),
                task,
            },
        };
        let session = Self::start(offer, negotiated, certificate, timeout).await?;
        // The WebSocket's end ends the session: forward it to the status the driver reports.
        let status = session.status_tx.clone();
        tokio::spawn(async move {
            if let Ok(why) = ended_rx.await {
                let _ = status.send(Status::Ended(why));
            }
        });
        Ok(session)
    }

    /// Starts ICE, DTLS and SRTP on a fresh socket against a negotiated answer.
    async fn start(
        offer: Offer,
        negotiated: Negotiated,
        certificate: &DtlsCertificate,
        timeout: Duration,
    ) -> Result<ClientSession, ClientError> {
        let Offer {
            local,
            audio_ssrc,
            video_ssrc,
            video_rtx_ssrc,
            transport,
            ..
        } = offer;
        let Negotiated {
            answer,
            resource,
            signal,
        } = negotiated;
        let passive_tcp = tcp_candidates(&answer);
        let answer = sdp::parse(&answer).map_err(|e| ClientError::Answer(e.to_string()))?;
        let video_rtx = negotiated_video_rtx(&answer, video_rtx_ssrc);
        // A player that negotiated transport-cc records what arrives and sends feedback, as a
        // browser does, so the node's estimate of it is real.
        let transport_cc = answer
            .media
            .iter()
            .flat_map(|m| &m.extmaps)
            .find(|e| e.uri == sdp::EXT_TRANSPORT_CC)
            .map(|e| (e.id, rtp::twcc::TwccRecorder::new()));
        let remote_fingerprint = answer
            .fingerprint
            .ok_or_else(|| ClientError::Answer("no fingerprint".into()))?
            .0;
        // The answerer's setup decides: active means it is the DTLS client, so we serve.
        let role = if answer.setup == Setup::Passive {
            DtlsRole::Client
        } else {
            DtlsRole::Server
        };
        let candidates: Vec<SocketAddr> = match transport {
            Transport::Udp => answer
                .candidates
                .iter()
                .copied()
                .filter(SocketAddr::is_ipv4)
                .collect(),
            // One connection, to the first (already IPv4): checks and media go on it.
            Transport::Tcp => passive_tcp.into_iter().take(1).collect(),
        };
        let Some(&first) = candidates.first() else {
            return Err(ClientError::Answer(format!(
                "no IPv4 {} host candidate",
                transport.name()
            )));
        };
        let socket = match transport {
            Transport::Udp => Link::udp().await?,
            Transport::Tcp => Link::tcp(first).await?,
        };
        if let Some(udp) = socket.udp_socket() {
            grow_receive_buffer(udp);
        }
        let socket = Arc::new(socket);
        let remote_ice = IceCredentials {
            ufrag: answer.ice_ufrag.clone(),
            pwd: answer.ice_pwd.clone(),
        };
        let stun_username = format!("{}:{}", remote_ice.ufrag, local.ufrag);
        let ice = IceControllingAgent::new(
            local,
            remote_ice,
            candidates,
            rand::random(),
            Instant::now(),
        );
        let state = Arc::new(Mutex::new(PeerState {
            ice,
            dtls: None,
            srtp_tx: None,
            srtp_rx: None,
            remote: None,
            counters: ClientCounters::default(),
            lose: Vec::new(),
            repair: None,
            early: Vec::new(),
            transport_cc,
        }));
        let (status_tx, mut status) = watch::channel(Status::Connecting);
        let status_tx = Arc::new(status_tx);
        let (received_tx, received) = mpsc::unbounded_channel();
        let (rtcp_tx, rtcp) = mpsc::unbounded_channel();
        let driver = Driver {
            socket: socket.clone(),
            state: state.clone(),
            status: status_tx.clone(),
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
        let failed = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(ClientError::Connect(format!(
                "not connected within {timeout:?}"
            ))),
        };
        if let Some(e) = failed {
            task.abort();
            if let Signal::Ws { task, .. } = signal {
                task.abort();
            }
            return Err(e);
        }
        Ok(ClientSession {
            socket,
            state,
            status,
            status_tx,
            received,
            rtcp,
            resource,
            signal,
            stun_username,
            task,
            send_buf: vec![0u8; 2048],
            audio_ssrc,
            video_ssrc,
            video_rtx,
        })
    }

    /// The WHIP/WHEP resource URL, or the WebSocket URL.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Encrypts and sends one plaintext RTP packet.
    pub async fn send_rtp(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let (len, remote) = {
            let mut state = self.state.lock().expect("client state lock");
            let (remote, srtp) = state.keyed_sender()?;
            self.send_buf[..packet.len()].copy_from_slice(packet);
            let len = srtp
                .protect_rtp(&mut self.send_buf, packet.len())
                .map_err(|e| ClientError::Srtp(e.to_string()))?;
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
            let (remote, srtp) = state.keyed_sender()?;
            let buf = self
                .send_buf
                .get_mut(..packet.len())
                .ok_or_else(|| ClientError::Srtp("RTCP packet too long".into()))?;
            buf.copy_from_slice(packet);
            let len = srtp
                .protect_rtcp(&mut self.send_buf, packet.len())
                .map_err(|e| ClientError::Srtp(e.to_string()))?;
            (len, remote)
        };
        self.socket.send_to(&self.send_buf[..len], remote).await?;
        Ok(())
    }

    /// Sends `bytes` unchanged from this session's socket to the server address ICE nominated:
    /// tests send garbage from a real peer's address this way.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let remote = self
            .remote_addr()
            .ok_or_else(|| ClientError::Connect("no remote".into()))?;
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
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// A decrypted RTP packet already received, without waiting.
    pub fn try_recv_rtp(&mut self) -> Option<Vec<u8>> {
        self.received.try_recv().ok()
    }

    /// An RTCP packet already received, without waiting.
    pub fn try_recv_rtcp(&mut self) -> Option<Vec<u8>> {
        self.rtcp.try_recv().ok()
    }

    /// The next decrypted RTCP compound packet from the server, or `None` on timeout.
    pub async fn recv_rtcp(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(timeout, self.rtcp.recv())
            .await
            .ok()
            .flatten()
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

    /// Drops the next arrival of each of these RTP packets (SSRC, sequence number) before SRTP,
    /// as if the network lost it on the way: a copy that arrives later, such as the node's
    /// retransmission, is received. Dropping a packet after decrypting it would not do: SRTP's
    /// replay check rejects a second copy of a packet the client kept.
    pub fn lose_once(&self, ssrc: u32, seqs: impl IntoIterator<Item = u16>) {
        let mut state = self.state.lock().expect("client state lock");
        state.lose.extend(seqs.into_iter().map(|seq| (ssrc, seq)));
    }

    /// Makes this player ask for the video it misses with generic NACKs (RFC 4585), as a
    /// browser does, and drop `loss_percent` % of the video datagrams that arrive, at random,
    /// before SRTP, as a lossy network would (0 for none). See [`crate::repair`]. Packets that
    /// arrived before the call are not tracked.
    pub fn enable_nack(&self, loss_percent: f64) {
        use rand::SeedableRng;
        let mut state = self.state.lock().expect("client state lock");
        state.repair = Some(Repair::new(
            vec![VIDEO_PT],
            loss_percent,
            rand::rngs::StdRng::seed_from_u64(rand::random()),
            rand::random::<u32>() | 1,
        ));
    }

    /// Changes the share of video datagrams dropped on arrival; NACKs go on. Nothing without
    /// [`ClientSession::enable_nack`] first.
    pub fn set_loss(&self, loss_percent: f64) {
        let mut state = self.state.lock().expect("client state lock");
        if let Some(repair) = state.repair.as_mut() {
            repair.set_loss(loss_percent);
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> ClientCounters {
        let state = self.state.lock().expect("client state lock");
        let mut counters = state.counters.clone();
        if let Some(repair) = &state.repair {
            counters.repair = repair.counts();
        }
        counters
    }

    /// Ends the session: an HTTP DELETE on its resource (WHIP/WHEP), or `unPublishStream` /
    /// `stopStream` and closing the WebSocket.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if let Signal::Ws { stop, task } = &mut self.signal {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            self.task.abort();
            return Ok(());
        }
        let result =
            http::request(hyper::Method::DELETE, &self.resource, None, String::new()).await;
        self.task.abort();
        let response = result?;
        if !response.status.is_success() {
            return Err(HttpError::Status {
                status: response.status.as_u16(),
                body: response.body,
            }
            .into());
        }
        Ok(())
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.task.abort();
        if let Signal::Ws { task, .. } = &self.signal {
            task.abort();
        }
    }
}

/// An SDP offer like the one a session sends, for requests that are never meant to connect.
pub fn sdp_offer(mode: Mode, certificate: &DtlsCertificate) -> String {
    sdp_offer_with(mode, certificate, OfferOptions::default())
}

/// [`sdp_offer`] asking for more (e.g. rtx).
pub fn sdp_offer_with(mode: Mode, certificate: &DtlsCertificate, options: OfferOptions) -> String {
    Offer::new(mode, certificate, options).sdp
}

/// The video rtx an answer negotiated: the payload type it kept, with the RTX SSRC the answer
/// announces (a server that sends), else the one we offered (we send).
fn negotiated_video_rtx(answer: &SessionDescription, offered: Option<u32>) -> Option<(u8, u32)> {
    let video = answer.media.iter().find(|m| m.kind == MediaKind::Video)?;
    let pt = video.codecs.first()?.rtx_pt?;
    let ssrc = video.rtx_ssrcs.first().map(|&(_, rtx)| rtx).or(offered)?;
    Some((pt, ssrc))
}

/// The offer a session sends, and what it needs to remember from it.
struct Offer {
    sdp: String,
    local: IceCredentials,
    audio_ssrc: u32,
    video_ssrc: u32,
    /// The RTX SSRC announced for video (publish with rtx).
    video_rtx_ssrc: Option<u32>,
    transport: Transport,
}

impl Offer {
    fn new(mode: Mode, certificate: &DtlsCertificate, options: OfferOptions) -> Offer {
        let local = IceCredentials::random(&mut rand::thread_rng());
        let audio_ssrc = rand::random::<u32>() | 1;
        let video_ssrc = rand::random::<u32>() | 1;
        let video_rtx_ssrc =
            (options.rtx && mode == Mode::Publish).then(|| rand::random::<u32>() | 1);
        let direction = if mode == Mode::Publish {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let media = [
            (MediaKind::Audio, "0", audio_ssrc),
            (MediaKind::Video, "1", video_ssrc),
        ]
        .into_iter()
        .map(|(kind, mid, ssrc)| OfferMedia {
            mid: mid.into(),
            kind,
            direction,
            codecs: offer_codecs(kind, mode, options),
            extmaps: options
                .transport_cc
                .then(|| rtcdn::sdp::Extmap {
                    id: TRANSPORT_CC_EXT_ID,
                    uri: rtcdn::sdp::EXT_TRANSPORT_CC.into(),
                })
                .into_iter()
                .chain(simulcast_extmaps(kind, mode, options))
                .collect(),
            send: (mode == Mode::Publish).then(|| SendTrack {
                ssrc,
                cname: "rtcdn-bench".into(),
                stream_id: "bench".into(),
                track_id: format!("bench-{mid}"),
                rtx_ssrc: video_rtx_ssrc.filter(|_| kind == MediaKind::Video),
            }),
            send_rids: simulcast_extmaps(kind, mode, options)
                .next()
                .map(|_| SIMULCAST_RIDS.map(String::from).to_vec())
                .unwrap_or_default(),
        })
        .collect();
        let sdp = sdp::write_offer(&OfferParams {
            ice_ufrag: local.ufrag.clone(),
            ice_pwd: local.pwd.clone(),
            fingerprint: Fingerprint(certificate.fingerprint()),
            media,
            active_tcp: None,
        });
        Offer {
            sdp,
            local,
            audio_ssrc,
            video_ssrc,
            video_rtx_ssrc,
            transport: options.transport,
        }
    }
}

/// The answer's passive TCP host candidates (RFC 6544) of component 1, IPv4, in its order.
/// The SDP parser the server shares keeps UDP ones only: it never needs these.
fn tcp_candidates(answer: &str) -> Vec<SocketAddr> {
    answer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .filter_map(|value| {
            let f: Vec<&str> = value.split_ascii_whitespace().collect();
            let [_, "1", transport, _, address, port, "typ", "host", rest @ ..] = &f[..] else {
                return None;
            };
            let passive = rest.windows(2).any(|w| w == ["tcptype", "passive"]);
            if !transport.eq_ignore_ascii_case("tcp") || !passive {
                return None;
            }
            format!("{address}:{port}")
                .parse::<SocketAddr>()
                .ok()
                .filter(SocketAddr::is_ipv4)
        })
        .collect()
}

/// A few MiB of socket receive buffer, so a keyframe burst to a busy client is not dropped by
/// the kernel before the client reads it (best effort: SO_RCVBUFFORCE needs privileges).
fn grow_receive_buffer(socket: &tokio::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    let fd = socket.as_raw_fd();
    let set = |option| {
        // SAFETY: a valid socket, a c_int option value of the right length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        set(libc::SO_RCVBUF);
    }
}

fn ws_status<'a>(data: &'a [Value], id: &str) -> Option<&'a str> {
    let object = data.first()?;
    (object.get("mediaSessionId")?.as_str()? == id).then(|| object.get("status")?.as_str())?
}

fn ws_info(data: &[Value]) -> String {
    data.first()
        .and_then(|o| o.get("info"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Owns a session's WebSocket: answers pings, reports the end of the stream or the socket, and
/// on `stop` unpublishes or stops the stream and closes the socket.
async fn ws_keeper(
    mut ws: WsClient,
    id: String,
    stream: String,
    published: bool,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    ended: tokio::sync::oneshot::Sender<String>,
) {
    let why = loop {
        tokio::select! {
            message = ws.next() => match message {
                Some((name, data)) if name == "notifyStreamStatusEvent" => {
                    if let Some(status @ ("FAILED" | "STOPPED" | "UNPUBLISHED")) = ws_status(&data, &id) {
                        break format!("{status}: {}", ws_info(&data));
                    }
                }
                Some(_) => {}
                None => break "WebSocket closed by the server".to_owned(),
            },
            _ = &mut stop => {
                let message = if published { "unPublishStream" } else { "stopStream" };
                let _ = ws.send(message, json!({ "mediaSessionId": id, "name": stream, "published": published })).await;
                ws.close().await;
                return;
            }
        }
    };
    let _ = ended.send(why);
    ws.close().await;
}

/// Reports the end of the media transport, unless the session already ended: the signalling's
/// reason (a FAILED status over the WebSocket, which the node sends before it closes DTLS) is
/// the one a client acts on, and the DTLS close that follows must not replace it.
fn transport_ended(status: &watch::Sender<Status>, why: String) {
    status.send_if_modified(|current| {
        if matches!(current, Status::Ended(_)) {
            return false;
        }
        *current = Status::Ended(why);
        true
    });
}

/// Whether to drop an arriving SRTP packet (at least an RTP header long) before SRTP, as if the
/// network lost it: one [`ClientSession::lose_once`] names, or one the injected loss picks.
/// Dropping after decrypting would not do: SRTP's replay check rejects a second copy of a packet
/// the client kept, so a retransmission could never be received.
fn should_drop(state: &mut PeerState, data: &[u8]) -> bool {
    // SRTP leaves the header in the clear.
    let pt = data[1] & 0x7f;
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    if let Some(at) = state.lose.iter().position(|&l| l == (ssrc, seq)) {
        state.lose.swap_remove(at);
        return true;
    }
    state
        .repair
        .as_mut()
        .is_some_and(|repair| repair.should_drop(ssrc, seq, pt))
}

/// Queues the NACKs due now, sealed (SRTCP), once keyed; returns when more will be due.
fn poll_nacks(
    state: &mut PeerState,
    transmits: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> Option<Instant> {
    let PeerState {
        repair: Some(repair),
        srtp_tx: Some(srtp),
        remote: Some(remote),
        ..
    } = state
    else {
        return None;
    };
    // A NACK of at most MAX_PER_NACK numbers fits with room for the SRTCP trailer.
    seal_each(srtp, *remote, transmits, |buf| {
        repair.poll_nack(Instant::now(), buf)
    });
    repair.poll_timeout()
}

/// Transport-cc feedback that is due, sealed for sending; returns when more is due.
fn poll_transport_feedback(
    state: &mut PeerState,
    transmits: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> Option<Instant> {
    let PeerState {
        transport_cc: Some((_, recorder)),
        srtp_tx: Some(srtp),
        remote: Some(remote),
        ..
    } = state
    else {
        return None;
    };
    let now = Instant::now();
    seal_each(srtp, *remote, transmits, |buf| {
        // Room for the SRTCP trailer after the feedback.
        recorder
            .poll_feedback(now, rtp::Ssrc(1), rtp::Ssrc(0), &mut buf[..1200])
            .ok()
            .flatten()
    });
    recorder.poll_timeout()
}

/// Seals each RTCP packet `next` writes (until it returns `None`) and queues it to `remote`.
fn seal_each(
    srtp: &mut SrtpContext,
    remote: SocketAddr,
    transmits: &mut Vec<(SocketAddr, Vec<u8>)>,
    mut next: impl FnMut(&mut [u8]) -> Option<usize>,
) {
    let mut buf = [0u8; 1500];
    while let Some(len) = next(&mut buf) {
        if let Ok(len) = srtp.protect_rtcp(&mut buf, len) {
            transmits.push((remote, buf[..len].to_vec()));
        }
    }
}

struct Driver {
    socket: Arc<Link>,
    state: Arc<Mutex<PeerState>>,
    status: Arc<watch::Sender<Status>>,
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
                    transport_ended(&self.status, why);
                    return;
                }
            };
            for (destination, contents) in transmits {
                let _ = self.socket.send_to(&contents, destination).await;
            }
            let sleep = tokio::time::sleep_until(
                deadline
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
                    .into(),
            );
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (len, from) = match received {
                        Ok(got) => got,
                        Err(e) if self.socket.is_closed(&e) => {
                            transport_ended(&self.status, format!("ICE-TCP: {e}"));
                            return;
                        }
                        Err(_) => continue,
                    };
                    self.handle_datagram(from, &mut buf[..len]);
                }
                Some(event) = dtls_rx.recv() => {
                    if let Some(why) = self.handle_dtls(event).await {
                        transport_ended(&self.status, why);
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
    fn step(
        &self,
        dtls_tx: &mpsc::UnboundedSender<DtlsEvent>,
    ) -> Result<(Vec<(SocketAddr, Vec<u8>)>, Option<Instant>), String> {
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
        let deadline = [
            state.ice.poll_timeout(),
            poll_nacks(&mut state, &mut transmits),
            poll_transport_feedback(&mut state, &mut transmits),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok((transmits, deadline))
    }

    fn handle_datagram(&self, from: SocketAddr, data: &mut [u8]) {
        let mut state = self.state.lock().expect("client state lock");
        match Datagram::classify(data) {
            Datagram::Stun => {
                let _ = state.ice.handle_packet(Instant::now(), from, data);
            }
            Datagram::Dtls => {
                if let Some(dtls) = &state.dtls {
                    dtls.handle_record(data);
                }
            }
            Datagram::Rtp if data.len() >= 12 && should_drop(&mut state, data) => {
                state.counters.rtp_lost += 1;
            }
            Datagram::Rtp | Datagram::Rtcp => self.handle_srtp(&mut state, data),
            Datagram::Unknown => {}
        }
    }

    fn handle_srtp(&self, state: &mut PeerState, data: &mut [u8]) {
        let is_rtcp = Datagram::classify(data) == Datagram::Rtcp;
        let Some(srtp) = state.srtp_rx.as_mut() else {
            if state.early.len() < MAX_EARLY_SRTP {
                state.early.push(data.to_vec());
            }
            return;
        };
        let result = if is_rtcp {
            srtp.unprotect_rtcp(data)
        } else {
            srtp.unprotect_rtp(data)
        };
        match result {
            Ok(len) if is_rtcp => {
                state.counters.rtcp_received += 1;
                let _ = self.rtcp.send(data[..len].to_vec());
            }
            Ok(len) => {
                state.counters.rtp_received += 1;
                if let (Some((id, recorder)), Ok(header)) = (
                    state.transport_cc.as_mut(),
                    rtp::RtpHeader::parse(&data[..len]),
                ) {
                    if let Some(seq) = rtp::twcc::transport_seq(&header, *id) {
                        recorder.on_packet(Instant::now(), seq);
                    }
                }
                if let Some(repair) = state.repair.as_mut() {
                    repair.handle_rtp(Instant::now(), &data[..len]);
                }
                let _ = self.received.send(data[..len].to_vec());
            }
            Err(_) => state.counters.srtp_failures += 1,
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
                        for mut early in std::mem::take(&mut state.early) {
                            self.handle_srtp(&mut state, &mut early);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_tcp_candidates_are_read_from_the_answer() {
        let answer = "v=0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 31000 typ host\r\n\
            a=candidate:2 1 tcp 1518280447 127.0.0.1 31000 typ host tcptype passive\r\n\
            a=candidate:3 1 TCP 1518280446 10.0.0.1 9 typ host tcptype active\r\n\
            a=candidate:4 1 tcp 1518280445 ::1 31000 typ host tcptype passive\r\n\
            a=candidate:5 2 tcp 1518280444 127.0.0.2 31000 typ host tcptype passive\r\n";
        assert_eq!(
            tcp_candidates(answer),
            vec!["127.0.0.1:31000".parse::<SocketAddr>().unwrap()]
        );
    }
}
