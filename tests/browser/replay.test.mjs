// replay.html in headless Chromium: a terminal session is recorded as asciicast by the real wsproxy
// (--record-format asciicast --serve-recordings), then played back; the replayed terminal must show
// exactly what the live one showed (the size follows the NAWS the page sent), and the text that was sent.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import {
  Cleanup, freeDisplay, freePort, launchBrowser, openPage, runX, screenshotPath, startWsproxy, tempDir, terminalText,
  waitForStatus, waitForTerminal, waitUntil, WEB,
} from './helpers.mjs';

const IAC = 255, DO = 253, WILL = 251, SB = 250, SE = 240, ECHO = 1, SGA = 3, NAWS = 31;

const cleanup = new Cleanup();
let browser;

before(async () => {
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

// What the target sends, in pieces that cut characters in two (each piece is its own frame).
const PIECES = [
  Buffer.from([IAC, DO, NAWS, IAC, WILL, ECHO, IAC, WILL, SGA]),
  Buffer.from('replay test: h\xc3', 'latin1'),
  Buffer.from('\xa9llo \xe2\x9c', 'latin1'),
  Buffer.from('\x93 \x1b[1;32mgreen bold\x1b[0m plain\r\n', 'latin1'),
  Buffer.from('second line \u00e9\u00e8 \u2713\u2713\r\n$ '),
];

/** A target that sends PIECES 30 ms apart, then echoes what the client types (telnet commands left out). */
function startScriptedTarget(local) {
  const sockets = new Set();
  const server = net.createServer(async (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    for (const piece of PIECES) {
      socket.write(piece);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    let state = 'data';
    socket.on('data', (chunk) => {
      const echo = [];
      for (const byte of chunk) {
        if (state === 'data') {
          if (byte === IAC) state = 'iac';
          else if (byte !== 0) echo.push(byte); // CR NUL from the page: the CR is enough
        } else if (state === 'iac') {
          state = byte === SB ? 'sb' : byte >= WILL ? 'option' : 'data';
        } else if (state === 'option') {
          state = 'data';
        } else if (state === 'sb') {
          if (byte === IAC) state = 'sb-iac';
        } else if (state === 'sb-iac') {
          state = byte === SE ? 'data' : 'sb';
        }
      }
      if (echo.length > 0) socket.write(Buffer.from(echo));
    });
  });
  local.add(() => new Promise((resolve) => {
    for (const socket of sockets) socket.destroy();
    server.close(() => resolve());
  }));
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

test('replay.html plays an asciicast recording back as the live terminal showed it', async () => {
  const local = new Cleanup();
  const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
  try {
    const targetPort = await startScriptedTarget(local);
    const dir = tempDir('replay');
    local.add(() => fs.rmSync(dir, { recursive: true, force: true }));
    const { proc, origin } = await startWsproxy(local, [
      '--web', WEB, '--record', path.join(dir, 'term'), '--record-format', 'asciicast', '--serve-recordings',
      '127.0.0.1:0', `127.0.0.1:${targetPort}`,
    ], { name: 'replay' });

    // The live session, in telnet.html.
    const live = await openPage(context, `${origin}/telnet.html?autoconnect=1`);
    await waitForStatus(live, 'connected');
    await waitForTerminal(live, /^\$ *$/m, 15000);
    await live.keyboard.type('typed 42');
    await waitForTerminal(live, /^\$ typed 42$/m, 15000);
    const shown = await terminalText(live);
    assert.match(shown, /^replay test: héllo ✓ green bold plain$/m);
    assert.match(shown, /^second line éè ✓✓$/m);
    const liveSize = await live.evaluate(() => [window.wsproxyTerminal.term.cols, window.wsproxyTerminal.term.rows]);
    await live.close();
    await proc.waitForOutput(/closed:/, 10000);

    // The recording, played back.
    const page = await openPage(context, `${origin}/replay.html?speed=4`);
    await page.waitForFunction(() => ['done', 'failed'].includes(window.wsproxyReplay?.state), null,
      { timeout: 20000, polling: 50 });
    const state = await page.evaluate(() => ({
      state: window.wsproxyReplay.state,
      kind: window.wsproxyReplay.kind,
      name: window.wsproxyReplay.name,
      size: [window.wsproxyReplay.terminal?.cols, window.wsproxyReplay.terminal?.rows],
      status: document.getElementById('status').textContent,
      options: [...document.querySelectorAll('#recording option')].map((o) => o.value),
    }));
    assert.equal(state.state, 'done', state.status);
    assert.equal(state.kind, 'asciicast');
    assert.match(state.name, /^term\.\d+\.cast$/);
    assert.deepEqual(state.options, [state.name]);
    assert.deepEqual(state.size, liveSize, 'the replay takes the size the page reported (NAWS)');
    const replayed = await terminalText(page);
    await page.screenshot({ path: screenshotPath('replay-asciicast') });
    assert.equal(replayed, shown);
    // Colours survive: the green bold text is styled in the replay too.
    const green = await page.evaluate(() =>
      [...document.querySelectorAll('.xterm-rows span')].some((s) => s.textContent.includes('green bold') &&
        [...s.classList].some((c) => c.startsWith('xterm-fg-') || c.includes('bold'))));
    assert.ok(green, 'green bold is styled in the replay');
    assert.deepEqual(page.problems, []);
    assert.deepEqual(live.problems, []);
  } finally {
    await context.close();
    await local.run();
  }
});

/** The noVNC canvas of a page: its size and the colour at (x, y), or null before the first frame. */
function canvasAt(page, x, y) {
  return page.evaluate(([px, py]) => {
    const canvas = document.querySelector('#screen canvas');
    if (!canvas || canvas.width === 0) return null;
    const pixel = [...canvas.getContext('2d').getImageData(px, py, 1, 1).data.slice(0, 3)];
    return { width: canvas.width, height: canvas.height, pixel };
  }, [x, y]);
}

test('replay.html plays a noVNC recording of a real Xvnc desktop back into noVNC', async () => {
  const local = new Cleanup();
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  try {
    const dir = tempDir('replay-vnc');
    local.add(() => fs.rmSync(dir, { recursive: true, force: true }));
    const display = freeDisplay();
    const port = await freePort();
    const { proc, origin } = await startWsproxy(local, [
      '--web', WEB, '--record', path.join(dir, 'desk'), '--serve-recordings', '--wrap-mode=exit',
      `127.0.0.1:${port}`, '--', 'Xvnc', `:${display}`, '-rfbport', String(port), '-localhost', '-nolisten', 'tcp',
      '-geometry', '640x400', '-depth', '24', '-SecurityTypes', 'None',
    ], { name: 'replay-xvnc' });
    await proc.waitForOutput(/the wrapped command bound port/, 10000);
    await waitUntil(() => fs.existsSync(`/tmp/.X11-unix/X${display}`), 10000, `X socket of :${display}`);
    await runX({ env: { DISPLAY: `:${display}` } }, 'xsetroot', ['-solid', '#2f5d8a']);
    const near = (a, b) => a && a.every((v, i) => Math.abs(v - b[i]) <= 8);
    const ROOT = [0x2f, 0x5d, 0x8a];

    const live = await openPage(context, `${origin}/vnc.html?autoconnect=1`);
    await waitForStatus(live, 'connected');
    let seen = null;
    await waitUntil(async () => near((seen = await canvasAt(live, 5, 5))?.pixel, ROOT), 15000,
      'the root colour on the live canvas');
    await live.close();
    await proc.waitForOutput(/closed:/, 10000);

    const page = await openPage(context, `${origin}/replay.html`);
    await page.waitForFunction(() => ['done', 'failed'].includes(window.wsproxyReplay?.state), null,
      { timeout: 20000, polling: 50 });
    const state = await page.evaluate(() => [window.wsproxyReplay.state, window.wsproxyReplay.kind,
      document.getElementById('status').textContent]);
    assert.deepEqual(state.slice(0, 2), ['done', 'novnc'], state[2]);
    await waitUntil(async () => near((seen = await canvasAt(page, 5, 5))?.pixel, ROOT), 10000,
      `the recorded root colour on the replay canvas (${JSON.stringify(seen)})`);
    assert.deepEqual([seen.width, seen.height], [640, 400]);
    await page.screenshot({ path: screenshotPath('replay-novnc') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await local.run();
  }
});

test('replay.html says how to turn the list on when the server serves no recordings', async () => {
  const local = new Cleanup();
  const context = await browser.newContext();
  try {
    const { origin } = await startWsproxy(local, ['--web', WEB, '127.0.0.1:0', '127.0.0.1:9'], { name: 'no-list' });
    const page = await openPage(context, `${origin}/replay.html`);
    const status = await waitForStatus(page, 'failed');
    assert.match(status, /--serve-recordings/);
  } finally {
    await context.close();
    await local.run();
  }
});
