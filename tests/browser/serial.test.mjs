// serial.html in headless Chromium, through `wsproxy --unix-target` to a UNIX-socket "serial line" written
// here (like QEMU's -chardev socket,server): UTF-8 and raw bytes both ways, several windows at once.
// Also index.html's links, and QEMU's own WebSocket monitor socket (websocket=on) through a ws+unix: target.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  Cleanup, launchBrowser, openPage, screenshotPath, startProcess, startWsproxy, tempDir, terminalText,
  waitForStatus, waitForTerminal, waitUntil, WEB,
} from './helpers.mjs';

const cleanup = new Cleanup();
let browser;
let line; // the fake serial line
let proxy; // wsproxy in front of it

/**
 * A serial line on a UNIX socket: greets each connection (numbered), answers each line typed
 * (ended by CR) with "you typed: LINE", and on the line "binary" sends all 256 byte values.
 */
function startSerialLine(socketPath) {
  const connections = [];
  const server = net.createServer((socket) => {
    const conn = { n: connections.length + 1, received: [], socket };
    connections.push(conn);
    socket.on('error', () => {});
    socket.write(`serial line ready (connection ${conn.n}): héllo ✓\r\n`);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      conn.received.push(...chunk);
      pending = Buffer.concat([pending, chunk]);
      let cr;
      while ((cr = pending.indexOf(13)) >= 0) {
        const text = pending.subarray(0, cr).toString('utf8');
        pending = pending.subarray(cr + 1);
        if (text === 'binary') {
          socket.write(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
        } else {
          socket.write(`\r\nyou typed: ${text}\r\n`);
        }
      }
    });
  });
  cleanup.add(
    () =>
      new Promise((resolve) => {
        for (const conn of connections) conn.socket.destroy();
        server.close(() => resolve());
      }),
    'close the serial line',
  );
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(socketPath, () => resolve({ connections }));
  });
}

before(async () => {
  const dir = tempDir('serial');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'ttyS0.sock');
  line = await startSerialLine(socketPath);
  proxy = await startWsproxy(cleanup, ['--unix-target', socketPath, '--web', WEB, '127.0.0.1:0'], { name: 'serial' });
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

const rxCount = async (page) => Number(await page.getAttribute('#counters', 'data-rx'));

test('serial.html?autoconnect=1 shows the line and typing reaches it, UTF-8 intact', async () => {
  const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
  try {
    const before = line.connections.length;
    const page = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, /serial line ready \(connection \d+\): héllo ✓/);
    assert.equal(line.connections.length, before + 1);
    const conn = line.connections.at(-1);

    await page.keyboard.type('ünïcode ✓ 123');
    await page.keyboard.press('Enter');
    await waitUntil(() => conn.received.includes(13), 5000, 'Enter at the serial line');
    assert.deepEqual(Buffer.from(conn.received).toString('utf8'), 'ünïcode ✓ 123\r');
    await waitForTerminal(page, /^you typed: ünïcode ✓ 123$/m);
    // No local echo by default: a serial line echoes for itself (this one does not), so the text shows once.
    assert.equal((await terminalText(page)).split('ünïcode ✓ 123').length - 1, 1);
    await page.screenshot({ path: screenshotPath('serial-utf8') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('binary: all 256 byte values arrive, shown in hex', async () => {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  try {
    const page = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, /serial line ready/);
    await page.click('#hex');
    assert.equal(await page.getAttribute('#hex', 'aria-pressed'), 'true');
    const rxBefore = await rxCount(page);
    await page.keyboard.type('binary');
    await page.keyboard.press('Enter');
    await waitUntil(async () => (await rxCount(page)) >= rxBefore + 256, 5000, '256 bytes at the page');
    assert.equal(await rxCount(page), rxBefore + 256, 'exactly the 256 bytes, nothing added or lost');
    const screen = await waitForTerminal(page, /^f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff$/m);
    const rows = [];
    for (let hi = 0; hi < 16; hi++) {
      rows.push(Array.from({ length: 16 }, (_, lo) => ((hi << 4) | lo).toString(16).padStart(2, '0')).join(' '));
    }
    assert.ok(screen.includes(rows.join('\n')), `all 16 rows in order:\n${screen}`);
    await page.screenshot({ path: screenshotPath('serial-hex') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('two windows on the same serial target at once, each its own connection', async () => {
  const context = await browser.newContext({ viewport: { width: 700, height: 400 } });
  try {
    const first = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    const second = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1&eol=crlf&localecho=1`);
    await Promise.all([waitForStatus(first, 'connected'), waitForStatus(second, 'connected')]);
    const n1 = Number((await waitForTerminal(first, /connection (\d+)\)/)).match(/connection (\d+)\)/)[1]);
    const n2 = Number((await waitForTerminal(second, /connection (\d+)\)/)).match(/connection (\d+)\)/)[1]);
    assert.notEqual(n1, n2);

    await first.keyboard.type('from one');
    await first.keyboard.press('Enter');
    await second.keyboard.type('from two');
    await second.keyboard.press('Enter');
    await waitForTerminal(first, /^you typed: from one$/m);
    const secondScreen = await waitForTerminal(second, /^you typed: from two$/m);
    // localecho=1 shows the typed line; eol=crlf sends CR LF.
    assert.match(secondScreen, /^from two$/m);
    assert.doesNotMatch(await terminalText(first), /from two/);
    assert.doesNotMatch(secondScreen, /from one/);
    const conn2 = line.connections[n2 - 1];
    assert.equal(Buffer.from(conn2.received).toString('utf8'), 'from two\r\n');
    assert.deepEqual(first.problems, []);
    assert.deepEqual(second.problems, []);
  } finally {
    await context.close();
  }
});

test('the page reports the line closing, and reconnects', async () => {
  const context = await browser.newContext({ viewport: { width: 700, height: 400 } });
  try {
    const page = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    const n = Number((await waitForTerminal(page, /connection (\d+)\)/)).match(/connection (\d+)\)/)[1]);
    line.connections[n - 1].socket.end();
    await waitUntil(async () => (await page.getAttribute('#status', 'data-state')) !== 'connected', 5000,
      'the status to leave connected');
    assert.match(await page.textContent('#status'), /^Disconnected: /);
    await waitForTerminal(page, /\[Disconnected: /);
    assert.equal(await page.textContent('#connect'), 'Reconnect');
    await page.click('#connect');
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, new RegExp(`connection ${n + 1}\\)`));
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test("QEMU's monitor on a websocket=on UNIX socket, through a ws+unix: target, answers info version", async () => {
  const dir = tempDir('qemu-ws');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'mon.sock');
  const qemu = startProcess('qemu-ws-monitor', 'qemu-system-x86_64', [
    '-machine', 'none', '-nodefaults', '-display', 'none',
    '-chardev', `socket,id=m0,path=${socketPath},server=on,wait=off,websocket=on`,
    '-mon', 'chardev=m0,mode=readline',
  ]);
  cleanup.add(() => qemu.stop(), 'stop QEMU');
  await waitUntil(() => fs.existsSync(socketPath), 10000, "QEMU's monitor socket");
  const monitor = await startWsproxy(cleanup, ['--web', WEB, '127.0.0.1:0', `ws+unix:${socketPath}`], {
    name: 'serial-qemu-ws',
  });
  const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
  try {
    const page = await openPage(context, `${monitor.origin}/serial.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, /QEMU [\d.]+ monitor - type 'help' for more information/);
    await waitForTerminal(page, /^\(qemu\)/m);
    await page.keyboard.type('info version');
    await page.keyboard.press('Enter');
    // The monitor echoes the line and answers with its version, e.g. "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3".
    await waitForTerminal(page, /^\(qemu\) info version\n\d+\.\d+\.\d+.*\n\(qemu\)/m);
    await page.screenshot({ path: screenshotPath('serial-qemu-websocket-monitor') });
    // `quit` ends QEMU: the page reports the close instead of hanging.
    await page.keyboard.type('quit');
    await page.keyboard.press('Enter');
    await waitUntil(async () => (await page.getAttribute('#status', 'data-state')) !== 'connected', 10000,
      'the status to leave connected');
    await waitForTerminal(page, /\[Disconnected: /);
    await monitor.proc.waitForOutput(/closed: target closed/, 10000);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});

test('index.html links to the three consoles with this host and port filled in', async () => {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const page = await openPage(context, `${proxy.origin}/index.html?telnet_port=6023`);
    const href = (id) => page.getAttribute(`#link-${id}`, 'href');
    assert.equal(await href('vnc'), `${proxy.origin}/vnc.html?autoconnect=1`);
    assert.equal(await href('serial'), `${proxy.origin}/serial.html?autoconnect=1`);
    assert.equal(await href('telnet'), `http://127.0.0.1:6023/telnet.html?autoconnect=1`);
    await page.fill('#host', 'localhost');
    assert.equal(await href('vnc'), `http://localhost:${proxy.port}/vnc.html?autoconnect=1`);
    await page.screenshot({ path: screenshotPath('index') });
    // The serial link opens a working console.
    await page.fill('#host', '127.0.0.1');
    await page.click('#link-serial');
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, /serial line ready/);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});
