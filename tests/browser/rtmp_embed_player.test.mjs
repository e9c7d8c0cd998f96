// End-to-end, issue 15: ffmpeg publishes H.264 and AAC over RTMP to the real rtcdn binary, and
// the OFFICIAL Flashphoner Web SDK Embed Player (npm @flashphoner/websdk, served unchanged from
// the installed package on 127.0.0.1, as in flashphoner_sdk.test.mjs) plays the stream in headless
// Chromium over the Flashphoner WebSocket protocol: its frames decode and the tone (the AAC
// transcoded to Opus by the node) is heard.
// Every http(s) request to a host other than 127.0.0.1 is aborted and DNS is mapped to NOTFOUND,
// so nothing leaves the machine.
// Needs ffmpeg (scripts/test.sh installs it); skipped without it. Set RTCDN_SKIP_E2E=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  startRtcdn, newLoopbackContext, openLoggedPage, frameLog, framesOf, waitForSdkVideo,
  hookedAudioStats, EMBED_PLAYER_PATH, poll, freeTcpPort, sleep, withBrowserAndPackages,
} from './harness.mjs';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status !== 0;
const skip = process.env.RTCDN_SKIP_E2E ? 'RTCDN_SKIP_E2E is set'
  : noFfmpeg ? 'ffmpeg is not installed' : false;

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

/** ffmpeg publishing test pattern and tone to `url`, with the arguments rtmp.test.mjs uses. */
function ffmpegPublish(url) {
  const ffmpeg = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', '60', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-profile:v', 'baseline',
    '-tune', 'zerolatency', '-g', '60', '-bf', '0', '-c:a', 'aac',
    '-f', 'flv', url,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  ffmpeg.errText = '';
  ffmpeg.stderr.on('data', (b) => { ffmpeg.errText += b; });
  return ffmpeg;
}

test('RTMP publish (ffmpeg, H.264 + AAC) -> Flashphoner Embed Player in Chromium: frames decoded, Opus audio heard', { skip, timeout: 120_000 }, async (t) => {
  const rtmpPort = await freeTcpPort();
  const server = await startRtcdn({ args: ['--rtmp', `127.0.0.1:${rtmpPort}`] });
  const stream = 'rtmp-embed';
  const ffmpeg = ffmpegPublish(`rtmp://127.0.0.1:${rtmpPort}/live/${stream}`);
  const context = await newLoopbackContext(browser);
  let player = null;
  try {
    // Live once the node has the encoder's sequence header: WHEP then answers 400 to a bad
    // offer instead of 404. The Embed Player starts playing at once and does not retry.
    await poll(async () => {
      const res = await fetch(`${server.url}/whep/${stream}`, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0',
      });
      await res.arrayBuffer();
      return res.status !== 404;
    }, { timeout: 20_000, what: 'the RTMP stream to go live' });

    const q = new URLSearchParams({
      urlServer: `ws://127.0.0.1:${server.port}`, streamName: stream, mediaProviders: 'WebRTC', autoplay: 'true',
    });
    player = await openLoggedPage(context, `${pkg.url}${EMBED_PLAYER_PATH}?${q}`);
    const st = await waitForSdkVideo(player, { minFrames: 60 });
    t.diagnostic(`embed player decoded: ${JSON.stringify(st)}`);
    assert.equal(await player.textContent('#status'), '', 'no FAILED/DISCONNECTED on the player');
    assert.equal(st.mimeType?.toLowerCase(), 'video/h264');
    assert.ok(st.frameWidth === 640 && st.frameHeight === 360, `frame ${st.frameWidth}x${st.frameHeight}`);
    assert.equal(framesOf(player, 'playStream', '>')[0]?.data[0]?.name, stream);

    // The tone, decoded: Chromium measures the level of the audio it plays out, and the player
    // autoplays muted (the demo's unmutePlayOnStart = false), so unmute it as a user would.
    await player.evaluate(() => { document.querySelector('#remoteVideo video').muted = false; });
    let audio = null;
    await poll(async () => {
      audio = await hookedAudioStats(player);
      return audio && audio.packetsReceived >= 100 && audio.totalAudioEnergy > 0 && audio.audioLevel > 0.01;
    }, { timeout: 15_000, what: 'audible Opus audio' }).catch((e) => {
      throw new Error(`${e.message}; last audio stats: ${JSON.stringify(audio)}`);
    });
    t.diagnostic(`embed player audio: ${JSON.stringify(audio)}`);
    assert.equal(audio.mimeType?.toLowerCase(), 'audio/opus');
    // It keeps coming: two seconds later, more packets, still audible.
    await sleep(2000);
    const later = await hookedAudioStats(player);
    t.diagnostic(`embed player audio 2 s later: ${JSON.stringify(later)}`);
    assert.ok(later.packetsReceived >= audio.packetsReceived + 50, `packets ${audio.packetsReceived} -> ${later.packetsReceived}`);
    assert.ok(later.totalAudioEnergy > audio.totalAudioEnergy, 'audio energy grows');
    await player.screenshot({ path: '/tmp/rtcdn-e2e-rtmp-embed.png' });
  } catch (e) {
    let extra = '';
    if (player) {
      extra += `\n--- embed player WebSocket frames ('>' sent by the page, '<' received) ---\n${frameLog(player)}`;
      extra += `\n--- embed player console ---\n${(player.consoleLines || []).slice(-60).join('\n')}`;
    }
    extra += `\n--- blocked off-host requests ---\n${context.blocked.join('\n')}`;
    extra += `\n--- ffmpeg ---\n${ffmpeg.errText}`;
    extra += `\n--- rtcdn logs (${server.argv.join(' ')}) ---\n${server.logText().split('\n').slice(-100).join('\n')}`;
    e.message += extra;
    throw e;
  } finally {
    await context.close().catch(() => {});
    ffmpeg.kill('SIGKILL');
    await server.stop();
  }
});
