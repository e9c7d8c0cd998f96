//! The `rtmp_push_input` fuzz target's body: bytes from an RTMP server into an origin's push.

/// Bytes from a server into an [`RtmpPush`](crate::rtmp::push::RtmpPush) (see
/// `fuzz/README.md`, `rtmp_push_input`). The first byte picks the mode: bit 0 starts where a
/// real server (`RtmpConnection`) accepted the publish, bits 1.. size the reads. Whatever the
/// server sends, the push errs or goes on; once publishing, media still goes out.
pub fn fuzz_rtmp_push_input(data: &[u8]) {
    use crate::rtmp::chunk_guard::ChunkLimits;
    use crate::rtmp::push::RtmpPush;
    use crate::rtmp::{RtmpConnection, RtmpEvent};

    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let Ok(mut push) = RtmpPush::new("rtmp://edge/live", "live", "cam") else {
        return;
    };
    if mode & 1 != 0 {
        // A real exchange up to the accepted publish.
        let mut server = RtmpConnection::new(vec!["live".into()], ChunkLimits::default());
        for _ in 0..16 {
            let to_server = push.output().to_vec();
            push.clear_output();
            server
                .handle_input(&to_server)
                .expect("the push speaks RTMP");
            while let Some(event) = server.poll_event() {
                if let RtmpEvent::PublishRequested { .. } = event {
                    server.accept_publish().expect("accepted");
                }
            }
            let to_push = server.output().to_vec();
            server.clear_output();
            if to_push.is_empty() && to_server.is_empty() {
                break;
            }
            push.handle_input(&to_push)
                .expect("a real server's answers pass");
        }
        assert!(push.is_publishing(), "a real server takes the publish");
    }
    let read = usize::from(mode >> 1) * 13 + 1;
    for part in data.chunks(read) {
        if push.handle_input(part).is_err() {
            return;
        }
        push.clear_output();
        if push.is_publishing() {
            push.send_video(0, bytes::Bytes::from_static(&[0x27, 1, 0, 0, 0]))
                .expect("a publishing push sends");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_runs_on_garbage_and_past_a_real_publish() {
        super::fuzz_rtmp_push_input(&[0, 3, 1, 2, 0xFF]);
        super::fuzz_rtmp_push_input(&[1, 0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
        super::fuzz_rtmp_push_input(&[3; 4000]);
    }
}
