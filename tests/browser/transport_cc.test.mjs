// Transport-wide congestion control with Chromium on both sides: the publisher's bandwidth
// estimate runs on rtcdn's transport-cc feedback, and rtcdn estimates the player's bandwidth from
// the player's feedback to the transport-wide numbers rtcdn puts on every packet.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRtcdn, launchChromium, openPage, waitForState, waitForDecodedVideo, poll, sleep, e2eSkip, logTail } from './harness.mjs';

const skip = e2eSkip();

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

async function stream(server, name) {
  const j = await (await fetch(`${server.url}/api/stats`)).json();
  return j.streams.find((s) => s.name === name);
}

/** What Chromium's own getStats says of the peer connection `pcExpr`. */
function pcStats(page, pcExpr) {
  return page.evaluate(async (expr) => {
    const pc = eval(expr); // eslint-disable-line no-eval
    const rep = await pc.getStats();
    const out = { sdp: pc.remoteDescription?.sdp || '' };
    rep.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated) out.availableOutgoingBitrate = r.availableOutgoingBitrate;
      if (r.type === 'outbound-rtp' && r.kind === 'video') { out.bytesSent = r.bytesSent; out.targetBitrate = r.targetBitrate; }
      if (r.type === 'inbound-rtp' && r.kind === 'video') { out.framesDecoded = r.framesDecoded; out.bytesReceived = r.bytesReceived; }
    });
    return out;
  }, pcExpr);
}

test('transport-cc: a Chromium publisher keeps its bitrate on rtcdn\'s feedback; a Chromium player\'s bandwidth is estimated from its own', { skip, timeout: 120_000 }, async (t) => {
  const server = await startRtcdn();
  const pub = await openPage(browser, `${server.url}/?stream=twcc&codec=VP8&autostart=publish`);
  const play = await openPage(browser);
  try {
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
    await play.goto(`${server.url}/?stream=twcc&autostart=play`);
    await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
    await waitForDecodedVideo(play, { minFrames: 60, timeout: 30_000 });

    // Both answers negotiated transport-cc with its header extension.
    const [p0, q0] = [await pcStats(pub, 'window.rtcdn.publishPc'), await pcStats(play, 'window.rtcdn.playPc')];
    for (const [who, s] of [['publisher', p0], ['player', q0]]) {
      assert.match(s.sdp, /a=rtcp-fb:\d+ transport-cc/, `${who}'s answer has transport-cc feedback`);
      assert.match(s.sdp, /a=extmap:\d+ http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01/, `${who}'s answer has the extension`);
    }

    // Ten more seconds of media: the publisher's estimate (on rtcdn's feedback alone: a
    // feedback that reported its packets lost, or late, would drive it down) keeps it sending,
    // and the player's estimate covers what it receives.
    await sleep(10_000);
    const [p1, q1] = [await pcStats(pub, 'window.rtcdn.publishPc'), await pcStats(play, 'window.rtcdn.playPc')];
    const s = await poll(async () => {
      const st = await stream(server, 'twcc');
      return st && st.bitrate_bps > 0 && st.player_bandwidth_bps?.[0] != null ? st : false;
    }, { timeout: 5000, what: 'bitrate_bps and the player\'s estimate in /api/stats' });
    const sentKbps = ((p1.bytesSent - p0.bytesSent) * 8) / 10_000;
    t.diagnostic(`publisher: ${sentKbps.toFixed(0)} kbit/s sent over 10 s, Chromium's availableOutgoingBitrate ` +
      `${p1.availableOutgoingBitrate}, targetBitrate ${p1.targetBitrate}; node: publisher bitrate_bps ${s.bitrate_bps}, ` +
      `player_bandwidth_bps ${JSON.stringify(s.player_bandwidth_bps)}; player decoded ${q1.framesDecoded - q0.framesDecoded} frames in 10 s`);
    // The fake camera needs only a few hundred kbit/s; Chromium's estimate starts at 300 kbit/s
    // and only feedback that shows its probes arriving in time lifts it above 1 Mbit/s.
    assert.ok(sentKbps > 150, `the publisher kept sending (${sentKbps.toFixed(0)} kbit/s)`);
    assert.ok(p1.availableOutgoingBitrate > 1_000_000, `Chromium's estimate from rtcdn's feedback: ${p1.availableOutgoingBitrate}`);
    assert.ok(q1.framesDecoded - q0.framesDecoded > 150, 'the player kept decoding');
    const estimate = s.player_bandwidth_bps[0];
    assert.ok(estimate >= 0.9 * s.bitrate_bps,
      `on loopback the player's estimate (${estimate}) covers the publisher's bitrate (${s.bitrate_bps})`);
  } catch (e) {
    e.message += logTail(server, { lines: 100 });
    throw e;
  } finally {
    await pub.close();
    await play.close();
    await server.stop();
  }
});
