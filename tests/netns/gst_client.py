#!/usr/bin/python3
"""A minimal GStreamer WHIP publisher / WHEP player on webrtcbin + libnice (Debian 12's
GStreamer 1.22 has no whipsink/whipclientsink/whepsrc: those live in gst-plugins-rs).

    gst_client.py publish URL [--duration S] [--width W --height H]
    gst_client.py play URL [--duration S] [--min-frames N]
    (both: [--keepalive-conncheck] libnice keepalives as Binding requests, not indications;
    [--codec vp8|h265] the video codec, VP8 by default)

publish: videotestsrc ! vp8enc ! rtpvp8pay (H.265: x265enc ! rtph265pay, the VPS, SPS and PPS
before each IDR) and audiotestsrc ! opusenc ! rtpopuspay into a webrtcbin (max-bundle, sendonly
transceivers).
play: a webrtcbin with recvonly VP8 (or H.265) and Opus transceivers; received video is decoded
(rtpvp8depay ! vp8dec; rtph265depay ! h265parse ! libde265dec) and the decoded frames are
counted at a fakesink.

Both create an offer, wait until ICE gathering completes (non-trickle), POST the offer
(Content-Type: application/sdp) to URL, apply the 201's answer and run for --duration seconds
(or until SIGTERM/SIGINT; play also stops once --min-frames frames were decoded), then DELETE the
Location. libnice never uses loopback candidates, so URL must be reachable on a real interface.

Progress lines on stdout, prefixed "gst-whip:", for the test driver:
    gst-whip: offer ... / answer ... (the SDPs, indented), location URL,
    gst-whip: ice-connection-state=connected, connection-state=connected,
    gst-whip: decoded N frames WxH (play), done, error: ...
Exit code 0 if the peer connection reached "connected" (and, for play, --min-frames frames were
decoded), 1 otherwise.
"""
import argparse
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402


# Per video codec: the encoder and payloader a publisher sends with, the caps a player's recvonly
# transceiver offers, and the depayloader and decoder it decodes with.
VIDEO_CODECS = {
    "vp8": {
        "send": "vp8enc deadline=1 keyframe-max-dist=60 target-bitrate=800000 "
        "! rtpvp8pay pt=96 picture-id-mode=15-bit "
        "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        "recv": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        "decode": "rtpvp8depay ! vp8dec",
    },
    # x265's Main profile, one RTP stream, no DON (what rtcdn forwards), a dynamic payload type as
    # GStreamer's payloaders take (96-127). A joining player needs the parameter sets before its
    # first keyframe, as browsers send them: closed GOPs make every keyframe an IDR (x265's
    # default open GOP makes later ones CRA pictures) and config-interval -1 puts the VPS, SPS
    # and PPS before each IDR.
    "h265": {
        "send": "x265enc speed-preset=ultrafast tune=zerolatency key-int-max=60 bitrate=800 "
        "option-string=open-gop=0 "
        "! video/x-h265,profile=main ! rtph265pay pt=100 config-interval=-1 "
        "! application/x-rtp,media=video,encoding-name=H265,payload=100,clock-rate=90000",
        "recv": "application/x-rtp,media=video,encoding-name=H265,payload=100,clock-rate=90000",
        "decode": "rtph265depay ! h265parse ! libde265dec",
    },
}


def log(*a):
    print("gst-whip:", *a, flush=True)


def indent(sdp):
    return "\n".join("    " + line for line in sdp.strip().splitlines())


class Publisher:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.location = None
        self.connected = False
        self.failed = None
        self.offered = False
        self.frames = 0
        self.size = None
        if args.mode == "publish":
            video = VIDEO_CODECS[args.codec]["send"]
            desc = (
                "webrtcbin name=wb bundle-policy=max-bundle "
                f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},framerate=30/1 "
                f"! videoconvert ! queue ! {video} ! wb. "
                "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! queue "
                "! opusenc ! rtpopuspay pt=111 "
                "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2 ! wb. "
            )
            self.pipe = Gst.parse_launch(desc)
        else:
            # parse_launch of a single element returns that element, not a pipeline.
            self.pipe = Gst.Pipeline.new("play")
            wb = Gst.ElementFactory.make("webrtcbin", "wb")
            wb.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipe.add(wb)
        self.wb = self.pipe.get_by_name("wb")
        if args.keepalive_conncheck:
            # libnice's default keepalive is a Binding *indication* every 25 s (RFC 8445 §11) and
            # no RFC 7675 consent requests; this makes it send Binding requests instead.
            # Keep Python references: GstWebRTCNice's "agent" getter hands out a borrowed ref.
            self._ice = self.wb.get_property("ice-agent")
            self._agent = self._ice.get_property("agent")
            self._agent.set_property("keepalive-conncheck", True)
        self.wb.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.wb.connect("notify::ice-gathering-state", self.on_gathering)
        self.wb.connect("notify::ice-connection-state", self.on_ice_state)
        self.wb.connect("notify::connection-state", self.on_conn_state)
        if args.mode == "play":
            recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            for caps in (
                VIDEO_CODECS[args.codec]["recv"] + ",rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true",
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2",
            ):
                self.wb.emit("add-transceiver", recv, Gst.Caps.from_string(caps))
            self.wb.connect("pad-added", self.on_pad_added)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    # --- signalling --------------------------------------------------------------------------
    def on_negotiation_needed(self, wb):
        if self.offered:
            return
        self.offered = True
        if self.args.mode == "publish":
            for i in range(2):
                t = wb.emit("get-transceiver", i)
                if t is not None:
                    t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, wb, None)
        wb.emit("create-offer", None, promise)

    def on_offer_created(self, promise, wb, _):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            return self.fail(f"create-offer failed: {reply}")
        wb.emit("set-local-description", offer, Gst.Promise.new())
        self.on_gathering(wb, None)

    def on_gathering(self, wb, _pspec):
        st = wb.get_property("ice-gathering-state")
        if _pspec is not None:
            log("ice-gathering-state=" + st.value_nick)
        if st != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        if getattr(self, "_posted", False) or wb.get_property("local-description") is None:
            return
        self._posted = True
        GLib.idle_add(self.post_offer)

    def post_offer(self):
        sdp = self.wb.get_property("local-description").sdp.as_text()
        log("offer\n" + indent(sdp))
        req = urllib.request.Request(
            self.args.url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                status, body, loc = res.status, res.read().decode(), res.headers.get("Location")
        except urllib.error.HTTPError as e:
            return self.fail(f"HTTP {e.code}: {e.read().decode(errors='replace').strip()}")
        except Exception as e:  # noqa: BLE001
            return self.fail(f"POST failed: {e}")
        if status != 201:
            return self.fail(f"expected 201, got {status}")
        self.location = urllib.parse.urljoin(self.args.url, loc) if loc else None
        log("answer\n" + indent(body))
        log("location", self.location)
        ok, msg = GstSdp.SDPMessage.new_from_text(body)
        if ok != GstSdp.SDPResult.OK:
            return self.fail("unparsable answer SDP")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.wb.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    # --- play: decode what arrives ------------------------------------------------------------
    def on_pad_added(self, _wb, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media") if caps and caps.get_size() else None
        log(f"incoming {media} stream: {caps.to_string() if caps else '?'}")
        if media == "video":
            decode = VIDEO_CODECS[self.args.codec]["decode"]
            sink = Gst.parse_bin_from_description(
                f"queue ! {decode} ! videoconvert ! fakesink name=vsink signal-handoffs=true sync=false", True
            )
            sink.get_by_name("vsink").connect("handoff", self.on_frame)
        else:
            sink = Gst.parse_bin_from_description("queue ! fakesink sync=false", True)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def on_frame(self, _sink, buf, pad):
        self.frames += 1
        if self.size is None:
            s = pad.get_current_caps().get_structure(0)
            self.size = f"{s.get_int('width')[1]}x{s.get_int('height')[1]}"
        if self.frames % 30 == 0:
            log(f"decoded {self.frames} frames {self.size}")
        if self.args.min_frames and self.frames >= self.args.min_frames and not getattr(self, "_enough", False):
            self._enough = True
            GLib.idle_add(self.stop)

    # --- state -------------------------------------------------------------------------------
    def on_ice_state(self, wb, _pspec):
        st = wb.get_property("ice-connection-state")
        log("ice-connection-state=" + st.value_nick)
        if st == GstWebRTC.WebRTCICEConnectionState.FAILED:
            self.fail("ICE failed")

    def on_conn_state(self, wb, _pspec):
        st = wb.get_property("connection-state")
        log("connection-state=" + st.value_nick)
        if st == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected = True
        elif st == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.fail("peer connection failed")

    def on_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        self.fail(f"pipeline error: {err.message} ({dbg})")

    def fail(self, why):
        if self.failed is None:
            self.failed = why
            log("error:", why)
        self.loop.quit()
        return False

    def stop(self, *_):
        self.loop.quit()
        return False

    def run(self):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, self.stop)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, self.stop)
        GLib.timeout_add(int(self.args.duration * 1000), self.stop)
        GLib.timeout_add(int(self.args.connect_timeout * 1000), self.check_connected)
        self.pipe.set_state(Gst.State.PLAYING)
        self.loop.run()
        if self.location:
            try:
                urllib.request.urlopen(urllib.request.Request(self.location, method="DELETE"), timeout=3).read()
                log("deleted", self.location)
            except Exception as e:  # noqa: BLE001
                log("DELETE failed:", e)
        self.pipe.set_state(Gst.State.NULL)
        log("done", "connected" if self.connected else "never connected",
            f"decoded {self.frames} frames {self.size}" if self.args.mode == "play" else "")
        ok = self.connected and self.failed is None
        if self.args.mode == "play" and self.frames < self.args.min_frames:
            ok = False
        return 0 if ok else 1

    def check_connected(self):
        if not self.connected:
            hint = ""
            if not getattr(self, "_posted", False):
                hint = (" (ICE gathering never completed: libnice ignores loopback and interfaces named"
                        " veth*, docker*, virbr*...; with no usable interface it gathers forever)")
            self.fail(f"not connected after {self.args.connect_timeout} s{hint}")
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["publish", "play"])
    p.add_argument("url")
    p.add_argument("--min-frames", type=int, default=0)
    p.add_argument("--keepalive-conncheck", action="store_true",
                   help="libnice keepalives as Binding requests instead of indications")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--connect-timeout", type=float, default=20)
    p.add_argument("--codec", choices=sorted(VIDEO_CODECS), default="vp8")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    args = p.parse_args()
    Gst.init(None)
    sys.exit(Publisher(args).run())


if __name__ == "__main__":
    main()
