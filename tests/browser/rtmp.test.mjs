// End-to-end, issue 15: ffmpeg publishes H.264 and 44.1 kHz AAC over RTMP to the real rtcdn
// binary, and headless Chromium plays the stream over WHEP on the built-in page, decodes its
// frames and hears the tone (the AAC transcoded to Opus by the node).
// Needs ffmpeg (scripts/test.sh installs it); skipped without it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  startRtcdn, launchChromium, openPage, waitForState, waitForDecodedVideo, audioStats, poll, freeTcpPort, e2eSkip,
} from './harness.mjs';

const skip = e2eSkip({ needs: ['ffmpeg'] });

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test('RTMP publish (ffmpeg, H.264 + AAC) -> WHEP play in Chromium: frames decoded, Opus audio heard', { skip, timeout: 120_000 }, async (t) => {
  const rtmpPort = await freeTcpPort();
  const server = await startRtcdn({ args: ['--rtmp', `127.0.0.1:${rtmpPort}`] });
  const stream = 'rtmp-e2e';
  const ffmpeg = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', '60', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-profile:v', 'baseline',
    '-tune', 'zerolatency', '-g', '60', '-bf', '0', '-c:a', 'aac',
    '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/${stream}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let ffmpegErr = '';
  ffmpeg.stderr.on('data', (b) => { ffmpegErr += b; });
  const page = await openPage(browser);
  try {
    // Live once the node has the encoder's sequence header: WHEP then answers 400 to a bad
    // offer instead of 404.
    await poll(async () => {
      const res = await fetch(`${server.url}/whep/${stream}`, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0',
      });
      await res.arrayBuffer();
      return res.status !== 404;
    }, { timeout: 20_000, what: 'the RTMP stream to go live' });
    await page.goto(`${server.url}/?stream=${stream}&autostart=play`);
    await waitForState(page, 'playState', 'playing', { timeout: 20_000 });
    const st = await waitForDecodedVideo(page, { minFrames: 60, timeout: 30_000 });
    t.diagnostic(`decoded: ${JSON.stringify(st)}`);
    assert.equal(st.mimeType.toLowerCase(), 'video/h264');
    assert.ok(st.frameWidth === 640 && st.frameHeight === 360, `frame ${st.frameWidth}x${st.frameHeight}`);
    // The tone, decoded: Opus packets keep coming and carry sound, not silence or concealment.
    // Chromium measures the level of audio it plays out: the page's player starts muted.
    await page.$eval('#play-video', (v) => { v.muted = false; });
    let audio = null;
    await poll(async () => {
      audio = await audioStats(page);
      return audio && audio.packetsReceived >= 100 && audio.totalAudioEnergy > 0;
    }, { timeout: 15_000, what: 'audible Opus audio' }).catch((e) => {
      throw new Error(`${e.message}; last audio stats: ${JSON.stringify(audio)}`);
    });
    t.diagnostic(`audio: ${JSON.stringify(audio)}`);
    assert.equal(audio.mimeType.toLowerCase(), 'audio/opus');
    assert.ok(audio.audioLevel > 0.01, `audio level ${audio.audioLevel}`);
    // Once flowing, the audio keeps up: over three seconds, little is concealed.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const later = await audioStats(page);
    t.diagnostic(`audio 3 s later: ${JSON.stringify(later)}`);
    const received = later.totalSamplesReceived - audio.totalSamplesReceived;
    const concealed = later.concealedSamples - audio.concealedSamples;
    assert.ok(received >= 2.5 * 48_000, `samples (per channel) received in 3 s: ${received}`);
    assert.ok(concealed < received / 10, `concealed ${concealed} of ${received} samples`);
    assert.ok(later.audioLevel > 0.01, `audio level ${later.audioLevel}`);
  } catch (e) {
    e.message += `\n--- ffmpeg ---\n${ffmpegErr}\n--- rtcdn logs ---\n${server.logText().split('\n').slice(-100).join('\n')}`;
    throw e;
  } finally {
    await page.close();
    ffmpeg.kill('SIGKILL');
    await server.stop();
  }
});
