//! A client session's path to the node: a UDP socket, or one ICE-TCP connection to a passive
//! TCP host candidate (RFC 6544) carrying every datagram as an RFC 4571 frame (a 16-bit length,
//! then the datagram), as a browser whose network blocks UDP connects.
//!
//! Both look like a datagram socket to the driver: `send_to` and `recv_from`. Over TCP the
//! destination is always the one connected to (the ICE agent is given that candidate only),
//! and the end of the stream is an error of its own ([`Link::is_closed`]), so the session ends
//! at once rather than waiting for consent to lapse.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

/// How a session reaches the node's media port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// A UDP socket to the node's UDP host candidates.
    #[default]
    Udp,
    /// A TCP connection to the node's first passive TCP host candidate.
    Tcp,
}

impl Transport {
    /// The name `--transport` takes and the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A connected path; see the module docs.
pub enum Link {
    /// Datagrams as they are.
    Udp(UdpSocket),
    /// Datagrams framed on one connection.
    Tcp(TcpLink),
}

/// The two halves of an ICE-TCP connection, each behind its own lock: the driver reads while
/// the session and the driver write.
pub struct TcpLink {
    remote: SocketAddr,
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
}

struct Writer {
    half: OwnedWriteHalf,
    /// Length prefix and datagram, written with one call.
    frame: Vec<u8>,
}

struct Reader {
    half: OwnedReadHalf,
    /// Bytes read and not yet handed out: `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// What a read asks of the kernel at most; a frame is at most 2 + 65535 bytes.
const READ_BUFFER: usize = 128 * 1024;

impl Link {
    /// A UDP socket on an ephemeral port of every interface.
    pub async fn udp() -> io::Result<Link> {
        Ok(Link::Udp(UdpSocket::bind("0.0.0.0:0").await?))
    }

    /// A TCP connection to `remote` (a passive candidate), Nagle off: a datagram is a frame
    /// to send now, not bytes to gather.
    pub async fn tcp(remote: SocketAddr) -> io::Result<Link> {
        let stream = TcpStream::connect(remote).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Link::Tcp(TcpLink {
            remote,
            writer: Mutex::new(Writer {
                half: write,
                frame: Vec::with_capacity(2 + 2048),
            }),
            reader: Mutex::new(Reader {
                half: read,
                buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
        }))
    }

    /// The UDP socket, for socket options.
    pub fn udp_socket(&self) -> Option<&UdpSocket> {
        match self {
            Link::Udp(socket) => Some(socket),
            Link::Tcp(_) => None,
        }
    }

    /// Sends one datagram (over TCP: one frame to the connected peer, whatever `destination`).
    pub async fn send_to(&self, data: &[u8], destination: SocketAddr) -> io::Result<usize> {
        match self {
            Link::Udp(socket) => socket.send_to(data, destination).await,
            Link::Tcp(tcp) => {
                let len = u16::try_from(data.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "over 65535 B"))?;
                let mut writer = tcp.writer.lock().await;
                let Writer { half, frame } = &mut *writer;
                frame.clear();
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(data);
                half.write_all(frame).await?;
                Ok(data.len())
            }
        }
    }

    /// Receives one datagram into `buf` (over TCP: the next frame; one longer than `buf` is
    /// cut to fit). Cancel-safe: a frame is consumed only when it is returned.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Link::Udp(socket) => socket.recv_from(buf).await,
            Link::Tcp(tcp) => {
                let mut reader = tcp.reader.lock().await;
                let n = reader.next_frame(buf).await?;
                Ok((n, tcp.remote))
            }
        }
    }

    /// Whether `error`, from [`recv_from`](Self::recv_from), means the path is gone for good:
    /// the node closed or reset the TCP connection.
    pub fn is_closed(&self, error: &io::Error) -> bool {
        matches!(self, Link::Tcp(_))
            && matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
    }
}

impl Reader {
    async fn next_frame(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let have = &self.buf[self.start..self.end];
            if have.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
                if have.len() >= 2 + len {
                    let n = len.min(out.len());
                    out[..n].copy_from_slice(&have[2..2 + n]);
                    self.start += 2 + len;
                    return Ok(n);
                }
            }
            if self.end == self.buf.len() {
                // Move the partial frame to the front: a whole frame fits the buffer.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let got = self.half.read(&mut self.buf[self.end..]).await?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the ICE-TCP connection",
                ));
            }
            self.end += got;
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_connection_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let link = Link::tcp(addr).await.unwrap();
        let mut server = accept.await.unwrap();
        // The client's frames, as the node reads them.
        link.send_to(b"hello", addr).await.unwrap();
        link.send_to(&[7u8; 1500], addr).await.unwrap();
        let mut got = vec![0u8; 2 + 5 + 2 + 1500];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..7], b"\x00\x05hello");
        assert_eq!(&got[7..9], &1500u16.to_be_bytes());
        // The node's frames, split anywhere, come out one datagram each.
        let mut bytes = Vec::new();
        for payload in [&b"one"[..], &[9u8; 3000][..], b""] {
            bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            bytes.extend_from_slice(payload);
        }
        server.write_all(&bytes[..4]).await.unwrap();
        let mut buf = [0u8; 4096];
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            server.write_all(&bytes[4..]).await.unwrap();
            server
        });
        assert_eq!(link.recv_from(&mut buf).await.unwrap(), (3, addr));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(link.recv_from(&mut buf).await.unwrap().0, 3000);
        assert_eq!(link.recv_from(&mut buf).await.unwrap().0, 0);
        drop(writer.await.unwrap());
        let end = link.recv_from(&mut buf).await.unwrap_err();
        assert!(link.is_closed(&end), "{end}");
    }
}
