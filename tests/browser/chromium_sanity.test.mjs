// Checks that need no rtcdn server: Debian Chromium runs headless here, its fake camera works,
// it can send and decode VP8 and H.264 over a loopback RTCPeerConnection pair, and the built-in
// page (src/web/index.html) behaves against stub WHIP/WHEP endpoints — including a full
// publish/play run in which a second Chromium page plays the part of the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launchChromium, openPage, startStaticServer, waitForState, waitForDecodedVideo, videoStats,
  videoCodecOrder, poll,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test('chromium: fake camera and microphone via getUserMedia', async () => {
  const srv = await startStaticServer();
  const page = await openPage(browser, srv.url + '/');
  try {
    const r = await page.evaluate(async () => {
      const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
      const v = s.getVideoTracks()[0].getSettings();
      const out = { audio: s.getAudioTracks().length, video: s.getVideoTracks().length, width: v.width, height: v.height };
      s.getTracks().forEach((t) => t.stop());
      return out;
    });
    assert.equal(r.audio, 1);
    assert.equal(r.video, 1);
    assert.ok(r.width > 0 && r.height > 0, JSON.stringify(r));
  } finally { await page.close(); await srv.close(); }
});

test('chromium: WebRTC video codec capabilities include VP8 and H264', async (t) => {
  const page = await openPage(browser, 'about:blank');
  try {
    const caps = await page.evaluate(() => {
      const fmt = (c) => c.mimeType + (c.sdpFmtpLine ? ` (${c.sdpFmtpLine})` : '');
      return {
        send: RTCRtpSender.getCapabilities('video').codecs.map(fmt),
        recv: RTCRtpReceiver.getCapabilities('video').codecs.map(fmt),
        audio: [...new Set(RTCRtpSender.getCapabilities('audio').codecs.map((c) => c.mimeType))],
      };
    });
    t.diagnostic(`video send codecs: ${caps.send.join(' | ')}`);
    t.diagnostic(`video recv codecs: ${caps.recv.join(' | ')}`);
    t.diagnostic(`audio codecs: ${caps.audio.join(' ')}`);
    for (const want of ['video/VP8', 'video/H264']) {
      assert.ok(caps.send.some((c) => c.startsWith(want + ' ') || c === want), `${want} missing from send caps`);
      assert.ok(caps.recv.some((c) => c.startsWith(want + ' ') || c === want), `${want} missing from recv caps`);
    }
  } finally { await page.close(); }
});

for (const codec of ['VP8', 'H264']) {
  test(`chromium: in-page loopback pair sends and decodes ${codec}`, async () => {
    const srv = await startStaticServer();
    const page = await openPage(browser, srv.url + '/');
    try {
      await page.evaluate(async (codec) => {
        const gathered = (pc) => new Promise((r) => {
          if (pc.iceGatheringState === 'complete') return r();
          pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r());
        });
        const s = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
        const a = new RTCPeerConnection(), b = new RTCPeerConnection();
        window.loopPc = b;
        const tr = a.addTransceiver(s.getVideoTracks()[0], { direction: 'sendonly' });
        const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
        tr.setCodecPreferences(codecs.filter((c) => c.mimeType === 'video/' + codec)
          .concat(codecs.filter((c) => c.mimeType === 'video/rtx')));
        await a.setLocalDescription(await a.createOffer());
        await gathered(a);
        await b.setRemoteDescription(a.localDescription);
        await b.setLocalDescription(await b.createAnswer());
        await gathered(b);
        await a.setRemoteDescription(b.localDescription);
      }, codec);
      const st = await waitForDecodedVideo(page, { minFrames: 30, pcExpr: 'window.loopPc', videoSelector: null });
      assert.equal(st.mimeType, 'video/' + codec);
      assert.ok(st.frameWidth > 0);
    } finally { await page.close(); await srv.close(); }
  });
}

test('page: loads, exposes window.rtcdn and stable element ids (screenshot in /tmp)', async () => {
  const srv = await startStaticServer();
  const page = await openPage(browser, srv.url + '/?stream=cam1&codec=h264');
  try {
    const r = await page.evaluate(() => ({
      rtcdn: window.rtcdn && { publishState: window.rtcdn.publishState, playState: window.rtcdn.playState, base: window.rtcdn.base },
      ids: ['publish-start', 'publish-stop', 'publish-stream', 'publish-codec', 'publish-video', 'publish-status', 'publish-stats',
        'play-start', 'play-stop', 'play-stream', 'play-codec', 'play-video', 'play-status', 'play-stats']
        .filter((id) => !document.getElementById(id)),
      stream: document.getElementById('publish-stream').value,
      codec: document.getElementById('publish-codec').value,
      externalResources: [...document.querySelectorAll('script[src],link[href]:not([href^="data:"]),img[src],iframe,object')].length,
    }));
    assert.deepEqual(r.rtcdn, { publishState: 'idle', playState: 'idle', base: srv.url });
    assert.deepEqual(r.ids, [], 'missing element ids');
    assert.equal(r.stream, 'cam1');
    assert.equal(r.codec, 'H264');
    assert.equal(r.externalResources, 0);
    assert.deepEqual(page.consoleLines.filter((l) => /error/i.test(l)), []);
    await page.screenshot({ path: '/tmp/rtcdn-page.png' });
  } finally { await page.close(); await srv.close(); }
});

test('page: HTTP errors show status and body; WHIP offer is complete (non-trickle) with codec preference', async () => {
  const offers = [];
  const srv = await startStaticServer((req, res, body, u) => {
    if (req.method === 'POST' && u.pathname.startsWith('/whep/')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('stream not found: ' + decodeURIComponent(u.pathname.slice(6)));
    } else if (req.method === 'POST' && u.pathname.startsWith('/whip/')) {
      offers.push({ path: u.pathname, type: req.headers['content-type'], body });
      res.writeHead(503, { 'Content-Type': 'text/plain' });
      res.end('no capacity');
    } else return false;
  });
  const page = await openPage(browser, srv.url + '/?stream=nope&codec=H264&autostart=play,publish');
  try {
    await waitForState(page, 'playState', 'error');
    await waitForState(page, 'publishState', 'error');
    const r = await page.evaluate(() => ({ ...window.rtcdn, publishPc: undefined, playPc: undefined }));
    assert.match(r.playError, /HTTP 404/);
    assert.match(r.playError, /stream not found: nope/);
    assert.match(r.publishError, /HTTP 503.*no capacity/);
    assert.match(await page.textContent('#play-status'), /error/);
    assert.match(await page.textContent('#play-reason'), /404/);
    assert.equal(offers.length, 1);
    assert.equal(offers[0].path, '/whip/nope');
    assert.equal(offers[0].type, 'application/sdp');
    assert.match(offers[0].body, /a=candidate:/, 'offer has no candidates: gathering was not awaited');
    assert.match(offers[0].body, /a=sendonly/);
    assert.equal(videoCodecOrder(offers[0].body)[0], 'H264', videoCodecOrder(offers[0].body).join(','));
    assert.ok(!videoCodecOrder(offers[0].body).includes('VP8'), 'VP8 should be filtered out');
  } finally { await page.close(); await srv.close(); }
});

// A stand-in WHIP/WHEP server whose media end is a second Chromium page: it answers the
// page's offers, sends its fake camera to players, and closes the peer on DELETE.
async function startPeerStub() {
  const peer = await openPage(browser);
  const log = [];
  let n = 0;
  const srv = await startStaticServer(async (req, res, body, u) => {
    log.push(`${req.method} ${u.pathname}`);
    if (u.pathname === '/peer') { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end('<!doctype html><title>peer</title>'); return; }
    const m = u.pathname.match(/^\/(whip|whep)\/([^/]+)(?:\/([^/]+))?$/);
    if (!m) return false;
    if (req.method === 'POST' && !m[3]) {
      const id = `s${++n}`;
      const answer = await peer.evaluate(async ([kind, id, offer]) => {
        const pc = new RTCPeerConnection();
        window.peers[id] = pc;
        await pc.setRemoteDescription({ type: 'offer', sdp: offer });
        if (kind === 'whep') {
          for (const tr of pc.getTransceivers()) {
            const track = window.cam.getTracks().find((t) => t.kind === tr.receiver.track.kind);
            tr.direction = 'sendonly';
            await tr.sender.replaceTrack(track);
          }
        }
        await pc.setLocalDescription(await pc.createAnswer());
        if (pc.iceGatheringState !== 'complete') {
          await new Promise((r) => pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r()));
        }
        return pc.localDescription.sdp;
      }, [m[1], id, body]);
      res.writeHead(201, { 'Content-Type': 'application/sdp', Location: `/${m[1]}/${m[2]}/${id}` });
      res.end(answer);
    } else if (req.method === 'DELETE' && m[3]) {
      const ok = await peer.evaluate((id) => { const pc = window.peers[id]; if (pc) pc.close(); delete window.peers[id]; return !!pc; }, m[3]);
      res.writeHead(ok ? 200 : 404);
      res.end();
    } else return false;
  });
  await peer.goto(srv.url + '/peer');
  await peer.evaluate(async () => {
    window.peers = {};
    // Also lifts mDNS host-candidate obfuscation for this page.
    window.cam = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  });
  return { url: srv.url, peer, log, close: async () => { await peer.close(); await srv.close(); } };
}

test('page: publish and play against a Chromium stand-in server; stream end is detected', async (t) => {
  const stub = await startPeerStub();
  const pub = await openPage(browser, stub.url + '/?stream=demo&codec=H264&autostart=publish');
  const play = await openPage(browser, stub.url + '/?stream=demo&codec=VP8&autostart=play');
  try {
    await waitForState(pub, 'publishState', 'publishing');
    assert.match(await pub.evaluate(() => window.rtcdn.publishLocation), /\/whip\/demo\/s\d+$/);
    const sent = await poll(async () => {
      const s = await videoStats(pub, 'window.rtcdn.publishPc', 'outbound-rtp');
      return s && s.framesEncoded > 10 ? s : false;
    }, { timeout: 15_000, what: 'publisher encoding frames' });
    assert.equal(sent.mimeType, 'video/H264');

    await waitForState(play, 'playState', 'playing');
    const got = await waitForDecodedVideo(play, { minFrames: 60 });
    assert.equal(got.mimeType, 'video/VP8');
    assert.ok(got.videoWidth > 0);
    await poll(() => play.evaluate(() => /framesDecoded \d+/.test(document.getElementById('play-stats').textContent)),
      { timeout: 5000, what: 'stats line' });
    await play.screenshot({ path: '/tmp/rtcdn-page-playing.png' });

    // The "server" drops the player: the page must notice on its own.
    const playId = (await play.evaluate(() => window.rtcdn.playLocation)).split('/').pop();
    const t0 = Date.now();
    await stub.peer.evaluate((id) => window.peers[id].close(), playId);
    const st = await waitForState(play, 'playState', ['ended', 'error'], { timeout: 20_000 });
    assert.equal(st, 'ended');
    t.diagnostic(`player saw the end after ${Date.now() - t0} ms: ${await play.textContent('#play-reason')}`);
    assert.equal(await pub.evaluate(() => window.rtcdn.publishState), 'publishing');

    // Stop publishing: DELETE goes to the Location.
    await pub.click('#publish-stop');
    await waitForState(pub, 'publishState', 'stopped');
    await poll(() => stub.log.some((l) => /^DELETE \/whip\/demo\/s\d+$/.test(l)), { timeout: 5000, what: 'DELETE of the WHIP resource' });
  } finally {
    await pub.close(); await play.close(); await stub.close();
  }
});
