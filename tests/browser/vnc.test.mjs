// vnc.html in headless Chromium, through the real wsproxy (wrap mode) to a real Xvnc with X programs on it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Cleanup, launchBrowser, openPage, runX, screenshotPath, startX, startXvnc, tempDir, waitForStatus, waitUntil,
} from './helpers.mjs';

const ROOT_COLOR = [0x3a, 0x6e, 0xa5]; // xsetroot -solid '#3a6ea5'
const WIDTH = 800;
const HEIGHT = 600;

const cleanup = new Cleanup();
let xvnc;
let browser;
let typedFile;

before(async () => {
  const dir = tempDir('vnc');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  typedFile = path.join(dir, 'typed.txt');
  xvnc = await startXvnc(cleanup, { geometry: `${WIDTH}x${HEIGHT}` });
  await runX(xvnc, 'xsetroot', ['-solid', '#3a6ea5']);
  // An xterm at a known place whose input goes to a file: what the browser types and pastes lands there.
  // The font is the server's built-in 'fixed' (6x13), so the word COPYME sits at a known spot.
  startX(cleanup, xvnc, 'xterm', 'xterm', [
    '-geometry', '60x10+10+10', '-fn', 'fixed', '-bg', 'white', '-fg', 'black', '-bw', '2',
    '-e', 'sh', '-c', `echo COPYME; exec cat > '${typedFile}'`,
  ]);
  startX(cleanup, xvnc, 'xclock', 'xclock', ['-geometry', '220x220+540+300', '-bg', '#f6f0d8', '-update', '1']);
  await waitUntil(() => fs.existsSync(typedFile), 10000, 'the xterm to start cat');
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

/** Reads the noVNC canvas: its size, the colour at (x, y) and how many colours a grid of samples has. */
function readCanvas(page, x = WIDTH - 5, y = HEIGHT - 5) {
  return page.evaluate(
    ({ x, y }) => {
      const canvas = document.querySelector('#screen canvas');
      if (!canvas || canvas.width === 0) return null;
      const context = canvas.getContext('2d');
      const pixel = [...context.getImageData(x, y, 1, 1).data.slice(0, 3)];
      const colours = new Set();
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let py = 0; py < canvas.height; py += 7) {
        for (let px = 0; px < canvas.width; px += 7) {
          const i = (py * canvas.width + px) * 4;
          colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
      }
      return { width: canvas.width, height: canvas.height, pixel, colours: colours.size };
    },
    { x, y },
  );
}

const near = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 8);

/** Waits until the canvas shows the desktop: the root colour in a corner and the windows' colours. */
async function waitForDesktop(page) {
  let seen = null;
  try {
    await waitUntil(async () => {
      seen = await readCanvas(page);
      return seen && near(seen.pixel, ROOT_COLOR) && seen.colours >= 4;
    }, 15000, 'the desktop on the canvas');
  } catch (error) {
    throw new Error(`${error.message}; canvas: ${JSON.stringify(seen)}`);
  }
  return seen;
}

/** Page coordinates of desktop pixel (x, y). */
async function desktopPoint(page, x, y) {
  const box = await page.locator('#screen canvas').boundingBox();
  return { x: box.x + (x * box.width) / WIDTH, y: box.y + (y * box.height) / HEIGHT };
}

test('vnc.html?autoconnect=1 connects through wsproxy to Xvnc and shows the desktop', async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const page = await openPage(context, `${xvnc.origin}/vnc.html?autoconnect=1`);
    const status = await waitForStatus(page, 'connected');
    assert.equal(status, `Connected to 127.0.0.1:${xvnc.port}, unencrypted`);
    assert.equal(await page.getAttribute('#status', 'title'), `Connected to ws://127.0.0.1:${xvnc.port}/websockify`);
    const canvas = await waitForDesktop(page);
    assert.equal(canvas.width, WIDTH);
    assert.equal(canvas.height, HEIGHT);
    assert.equal(await page.textContent('#desktop-name'), `wsproxy test :${xvnc.display}`);
    assert.equal(await page.isEnabled('#ctrl-alt-del'), true);
    await page.screenshot({ path: screenshotPath('vnc-desktop') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('typing and pasting in the page reach the X program; its selection reaches the page', async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const page = await openPage(context, `${xvnc.origin}/vnc.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await waitForDesktop(page);

    // Keyboard: click into the xterm (the pointer gives it focus), type a line.
    const inXterm = await desktopPoint(page, 200, 60);
    await page.mouse.click(inXterm.x, inXterm.y);
    await page.keyboard.type('typed via noVNC 42');
    await page.keyboard.press('Enter');
    await waitUntil(() => fs.readFileSync(typedFile, 'utf8').includes('typed via noVNC 42\n'), 10000,
      `the typed line in ${typedFile}`);

    // Clipboard, browser to server: Send to remote sets the selection; a middle click pastes it into xterm.
    await page.click('#clipboard-toggle');
    // The text ends the line itself: xterm fetches a paste asynchronously, so an Enter key sent after the
    // middle click could overtake it.
    await page.fill('#clipboard-text', 'pasted from the browser\n');
    await page.click('#clipboard-send');
    const stillInXterm = await desktopPoint(page, 200, 60); // the open panel moved the canvas down
    await page.mouse.click(stillInXterm.x, stillInXterm.y, { button: 'middle' });
    await waitUntil(() => fs.readFileSync(typedFile, 'utf8').includes('pasted from the browser\n'), 10000,
      `the pasted line in ${typedFile}`);

    // Clipboard, server to browser: select the first line (COPYME) in the xterm by dragging across it
    // (a drag, unlike a double click, does not depend on how fast the events reach the server).
    // On a loaded machine a drag can reach xterm too late to count as one selection: up to three drags.
    await page.fill('#clipboard-text', '');
    const lineStart = await desktopPoint(page, 10 + 2 + 2, 10 + 2 + 2 + 6);
    const pastTheWord = await desktopPoint(page, 200, 10 + 2 + 2 + 6);
    let selected = false;
    for (let attempt = 0; attempt < 3 && !selected; attempt++) {
      await page.mouse.move(lineStart.x, lineStart.y);
      await page.mouse.down();
      await page.mouse.move(pastTheWord.x, pastTheWord.y, { steps: 5 });
      await page.mouse.up();
      // Dragging past the end of the text selects the line end too.
      selected = await page
        .waitForFunction(() => /^COPYME\s*$/.test(document.getElementById('clipboard-text').value), null, {
          timeout: 5000,
        })
        .then(() => true, () => false);
    }
    assert.ok(selected, `the xterm selection never reached the page: ${await page.inputValue('#clipboard-text')}`);
    await page.screenshot({ path: screenshotPath('vnc-typing-clipboard') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('two tabs on the same desktop at once', async () => {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const url = `${xvnc.origin}/vnc.html?autoconnect=1&resize=scale`;
    const first = await openPage(context, url);
    const second = await openPage(context, url);
    await Promise.all([waitForStatus(first, 'connected'), waitForStatus(second, 'connected')]);
    await Promise.all([waitForDesktop(first), waitForDesktop(second)]);
    // Both still connected after both drew: neither pushed the other off (shared session).
    await first.waitForTimeout(300);
    assert.equal(await first.getAttribute('#status', 'data-state'), 'connected');
    assert.equal(await second.getAttribute('#status', 'data-state'), 'connected');
    await first.screenshot({ path: screenshotPath('vnc-tab-1') });
    await second.screenshot({ path: screenshotPath('vnc-tab-2') });
    assert.deepEqual(first.problems, []);
    assert.deepEqual(second.problems, []);
  } finally {
    await context.close();
  }
});

test('disconnect and reconnect from the bar', async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const page = await openPage(context, `${xvnc.origin}/vnc.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await page.click('#disconnect');
    const text = await waitUntil(async () => {
      const state = await page.getAttribute('#status', 'data-state');
      return state !== 'connected' && state !== 'connecting' && (await page.textContent('#status'));
    }, 10000, 'the status to leave connected');
    assert.match(text, /^Disconnected: closed by you/);
    assert.equal(await page.textContent('#connect'), 'Reconnect');
    await page.click('#connect');
    await waitForStatus(page, 'connected');
    await waitForDesktop(page);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('a password-protected server: the page asks, a wrong password is reported, the right one connects', async () => {
  const cleanupSecured = new Cleanup();
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const secured = await startXvnc(cleanupSecured, { geometry: '640x480', password: 's3cret-pw', name: 'xvnc-auth' });
    await runX(secured, 'xsetroot', ['-solid', '#3a6ea5']);

    const page = await openPage(context, `${secured.origin}/vnc.html?autoconnect=1`);
    await page.waitForSelector('#credentials:not([hidden])', { timeout: 10000 });
    assert.equal(await page.isVisible('#password'), true);
    assert.equal(await page.isVisible('#username'), false);
    await page.fill('#password', 'wrong-pw');
    await page.click('#credentials-send');
    await waitForStatus(page, 'failed', 10000);
    assert.match(await page.textContent('#status'), /authentication failed/i);

    await page.click('#connect');
    await page.waitForSelector('#credentials:not([hidden])', { timeout: 10000 });
    await page.fill('#password', 's3cret-pw');
    await page.click('#credentials-send');
    await waitForStatus(page, 'connected');
    const canvas = await readCanvas(page, 10, 10);
    assert.equal(canvas.width, 640);

    // password= in the URL needs no prompt.
    const direct = await openPage(context, `${secured.origin}/vnc.html?autoconnect=1&password=s3cret-pw`);
    await waitForStatus(direct, 'connected');
    assert.equal(await direct.isVisible('#credentials'), false);
    // The wrong password made noVNC log the failure; nothing else may have gone wrong.
    assert.deepEqual(page.problems.filter((p) => !/authentication|security|password/i.test(p)), []);
    assert.deepEqual(direct.problems, []);
  } finally {
    await context.close();
    await cleanupSecured.run();
  }
});

test('the page reports the server going away', async () => {
  const cleanupGone = new Cleanup();
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const doomed = await startXvnc(cleanupGone, { geometry: '320x240', name: 'xvnc-doomed' });
    const page = await openPage(context, `${doomed.origin}/vnc.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await doomed.proc.stop();
    const text = await waitUntil(async () => {
      const state = await page.getAttribute('#status', 'data-state');
      return (state === 'failed' || state === 'disconnected') && (await page.textContent('#status'));
    }, 10000, 'the status to show the disconnect');
    assert.match(text, /^Disconnected: /);
    assert.doesNotMatch(text, /closed by you/);
    assert.equal(await page.isVisible('#connect'), true);
  } finally {
    await context.close();
    await cleanupGone.run();
  }
});
