//! Publishing as plain RTP: the bench's shaped packets, unencrypted, to a server's RTP input
//! ports, as an encoder or a gateway feeds one. It lets the same client drive a server that
//! ingests RTP rather than WHIP (Janus's streaming plugin, for the side-by-side comparison in
//! BENCHMARKS.md), with the same media the WHIP publishers send.
//!
//! Stream `i` sends its video to `base + 4i` and its audio to `base + 4i + 2` (even ports, RTCP
//! would take the odd ones), so N mountpoints are configured as one arithmetic series.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Ports between one stream's video port and the next stream's.
pub const PORTS_PER_STREAM: u16 = 4;
/// The audio port's offset from the stream's video port.
pub const AUDIO_PORT_OFFSET: u16 = 2;

/// Where stream `index`'s video and audio go, for a series starting at `base`; `None` when the
/// series runs past the last port.
pub fn stream_ports(base: SocketAddr, index: usize) -> Option<(SocketAddr, SocketAddr)> {
    let offset = u16::try_from(index).ok()?.checked_mul(PORTS_PER_STREAM)?;
    let video = base.port().checked_add(offset)?;
    let audio = video.checked_add(AUDIO_PORT_OFFSET)?;
    Some((
        SocketAddr::new(base.ip(), video),
        SocketAddr::new(base.ip(), audio),
    ))
}

/// One stream's plain RTP sender.
pub struct RtpPublisher {
    socket: UdpSocket,
    video: SocketAddr,
    audio: SocketAddr,
    /// The SSRC its video packets carry.
    pub video_ssrc: u32,
    /// The SSRC its audio packets carry.
    pub audio_ssrc: u32,
}

impl RtpPublisher {
    /// A sender of stream `index`'s packets to the series at `base`.
    pub async fn bind(base: SocketAddr, index: usize) -> std::io::Result<RtpPublisher> {
        let (video, audio) = stream_ports(base, index).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("stream {index}'s RTP ports run past 65535 from {base}"),
            )
        })?;
        let local: SocketAddr = if base.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        Ok(RtpPublisher {
            socket: UdpSocket::bind(local).await?,
            video,
            audio,
            video_ssrc: rand::random::<u32>() | 1,
            audio_ssrc: rand::random::<u32>() | 1,
        })
    }

    /// Sends one packet to the video or the audio port.
    pub async fn send(&self, video: bool, packet: &[u8]) -> std::io::Result<()> {
        let to = if video { self.video } else { self.audio };
        self.socket.send_to(packet, to).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_take_four_ports_each_video_then_audio() {
        let base: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(
            stream_ports(base, 0),
            Some((
                "10.0.0.1:5000".parse().unwrap(),
                "10.0.0.1:5002".parse().unwrap()
            ))
        );
        assert_eq!(
            stream_ports(base, 3).map(|(v, a)| (v.port(), a.port())),
            Some((5012, 5014))
        );
        let high: SocketAddr = "10.0.0.1:65530".parse().unwrap();
        assert_eq!(stream_ports(high, 2), None);
    }

    #[tokio::test]
    async fn packets_reach_the_stream_s_video_and_audio_ports() {
        let video = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let base = video.local_addr().unwrap();
        let audio = match UdpSocket::bind(stream_ports(base, 0).unwrap().1).await {
            Ok(socket) => socket,
            // The port two above is taken: nothing to learn on this machine now.
            Err(_) => return,
        };
        let publisher = RtpPublisher::bind(base, 0).await.unwrap();
        publisher.send(true, b"video").await.unwrap();
        publisher.send(false, b"audio").await.unwrap();
        let mut buf = [0u8; 16];
        let n = video.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"video");
        let n = audio.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"audio");
    }
}
