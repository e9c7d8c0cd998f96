#!/usr/bin/env python3
"""A WHEP front for Janus's streaming plugin, so rtcdn-bench can play from Janus as it plays
from rtcdn (bench/scripts/peer-janus.sh runs it).

WHEP has the player offer; Janus 1.1's streaming plugin only offers itself (viewer offers came
in a later Janus). The shim bridges the two without touching media: for each WHEP POST it opens
a Janus session, asks the plugin to `watch` the mountpoint, and then answers each side with the
other's description - the player gets Janus's offer turned into an answer (the player's mids,
setup:passive), Janus gets the player's offer turned into an answer (Janus's mids, only the
payload types Janus offered, setup:active). ICE credentials, fingerprints and candidates pass
through unchanged, so ICE and DTLS run end to end between the player and Janus.

    whep-janus-shim.py --listen 10.77.0.1:8090 --janus http://10.77.0.1:8088/janus \\
        --stream bench --mountpoint-base 1

POST /whep/{stream}-{i} (or {stream}-r{run}-{i}) plays mountpoint id mountpoint-base + i; DELETE on the returned
resource destroys the Janus session. Only the standard library is used.
"""

import argparse
import http.server
import json
import random
import re
import sys
import threading
import urllib.request


def janus_call(url, body, timeout=10):
    body = dict(body, transaction="%016x" % random.getrandbits(64))
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.load(response)
    if reply.get("janus") == "error":
        raise RuntimeError("janus: %s" % reply.get("error"))
    return reply


def janus_event(url, session, want, timeout=10):
    """Long-polls the session's events until one with `want` in its plugin data or jsep."""
    for _ in range(20):
        with urllib.request.urlopen(
            "%s/%d?maxev=1" % (url, session), timeout=timeout
        ) as response:
            event = json.load(response)
        for e in event if isinstance(event, list) else [event]:
            data = e.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise RuntimeError("streaming plugin: %s" % data["error"])
            if want(e):
                return e
    raise RuntimeError("janus sent no such event")


def sections(sdp):
    """The session part and the media sections, each a list of lines."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    head, media = [], []
    for line in lines:
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            head.append(line)
    return head, media


def kind_of(section):
    return section[0][2:].split(" ", 1)[0]


def mid_of(section):
    for line in section:
        if line.startswith("a=mid:"):
            return line[6:]
    return None


def payload_types(section):
    return section[0].split(" ")[3:]


def keep_payload_types(section, keep):
    """The section with only the payload types in `keep` (their rtpmap, fmtp, rtcp-fb too)."""
    parts = section[0].split(" ")
    out = [" ".join(parts[:3] + [pt for pt in parts[3:] if pt in keep])]
    for line in section[1:]:
        m = re.match(r"a=(rtpmap|fmtp|rtcp-fb):(\d+)[ ]", line)
        if m and m.group(2) not in keep:
            continue
        out.append(line)
    return out


def answer_from(offer, mids, setup, payloads=None):
    """`offer` rewritten as an answer: each media section takes the mid (and, if given, only
    the payload types) of the other side's section of the same kind; setup as given."""
    head, media = sections(offer)
    out_media, bundle = [], []
    for section in media:
        kind = kind_of(section)
        if kind not in mids:
            continue
        if payloads is not None:
            section = keep_payload_types(section, payloads[kind])
        section = [
            "a=mid:" + mids[kind]
            if line.startswith("a=mid:")
            else "a=setup:" + setup
            if line.startswith("a=setup:")
            else line
            for line in section
        ]
        out_media.append(section)
        bundle.append(mids[kind])
    out_head = [
        "a=group:BUNDLE " + " ".join(bundle) if line.startswith("a=group:BUNDLE") else line
        for line in head
        if not line.startswith("a=setup:")
    ]
    return "\r\n".join(out_head + [l for s in out_media for l in s]) + "\r\n"


class Shim:
    def __init__(self, janus, stream, mountpoint_base):
        self.janus = janus
        self.stream = stream
        self.mountpoint_base = mountpoint_base
        self.sessions = {}
        self.lock = threading.Lock()

    def mountpoint(self, name):
        # rtcdn-bench --repeat names its runs' streams {stream}-r{run}-{i}.
        m = re.fullmatch(re.escape(self.stream) + r"(?:-r\d+)?-(\d+)", name)
        return None if m is None else self.mountpoint_base + int(m.group(1))

    def play(self, name, client_offer):
        mountpoint = self.mountpoint(name)
        if mountpoint is None:
            return 404, "no such stream: %s" % name, None
        session = janus_call(self.janus, {"janus": "create"})["data"]["id"]
        try:
            handle_url = "%s/%d" % (self.janus, session)
            handle = janus_call(
                handle_url, {"janus": "attach", "plugin": "janus.plugin.streaming"}
            )["data"]["id"]
            handle_url = "%s/%d" % (handle_url, handle)
            janus_call(handle_url, {"janus": "message", "body": {"request": "watch", "id": mountpoint}})
            event = janus_event(self.janus, session, lambda e: "jsep" in e)
            janus_offer = event["jsep"]["sdp"]
            _, client_media = sections(client_offer)
            _, janus_media = sections(janus_offer)
            client_mids = {kind_of(s): mid_of(s) for s in client_media}
            janus_mids = {kind_of(s): mid_of(s) for s in janus_media}
            janus_payloads = {kind_of(s): set(payload_types(s)) for s in janus_media}
            to_janus = answer_from(client_offer, janus_mids, "active", janus_payloads)
            to_client = answer_from(janus_offer, client_mids, "passive")
            janus_call(
                handle_url,
                {
                    "janus": "message",
                    "body": {"request": "start"},
                    "jsep": {"type": "answer", "sdp": to_janus},
                },
            )
        except Exception:
            self.destroy(session)
            raise
        resource = "%016x" % random.getrandbits(64)
        with self.lock:
            self.sessions[resource] = session
        return 201, to_client, "/whep/resource/" + resource

    def destroy(self, session):
        try:
            janus_call("%s/%d" % (self.janus, session), {"janus": "destroy"})
        except Exception as e:
            print("destroy %d: %s" % (session, e), file=sys.stderr)

    def stop(self, resource):
        with self.lock:
            session = self.sessions.pop(resource, None)
        if session is None:
            return 404
        self.destroy(session)
        return 200


def handler_for(shim):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body="", headers=()):
            data = body.encode()
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            offer = self.rfile.read(length).decode()
            if not self.path.startswith("/whep/"):
                return self.reply(404, "not a WHEP endpoint")
            try:
                status, body, location = shim.play(self.path[len("/whep/"):], offer)
            except Exception as e:
                return self.reply(502, "janus: %s" % e)
            headers = [("Content-Type", "application/sdp")]
            if location:
                headers.append(("Location", location))
            self.reply(status, body, headers)

        def do_DELETE(self):
            prefix = "/whep/resource/"
            if not self.path.startswith(prefix):
                return self.reply(404)
            self.reply(shim.stop(self.path[len(prefix):]))

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve WHEP on")
    parser.add_argument("--janus", required=True, help="Janus HTTP API URL (.../janus)")
    parser.add_argument("--stream", default="bench", help="stream name prefix")
    parser.add_argument("--mountpoint-base", type=int, default=1)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    shim = Shim(args.janus, args.stream, args.mountpoint_base)
    server = http.server.ThreadingHTTPServer((host, int(port)), handler_for(shim))
    server.daemon_threads = True
    print("whep-janus-shim on http://%s -> %s" % (args.listen, args.janus), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
