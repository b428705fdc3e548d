// telnet.html in headless Chromium: a login on the real telnetd behind wsproxy (wrap mode; the one installed,
// through scripts/telnetd-once), and the
// telnet negotiation checked byte by byte against a small server written here.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import {
  Cleanup, freePort, launchBrowser, openPage, screenshotPath, startWsproxy, TELNETD_ONCE, waitForStatus,
  waitForTerminal, waitUntil, ROOT, WEB,
} from './helpers.mjs';

const IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240;
const ECHO = 1, SGA = 3, TTYPE = 24, NAWS = 31;

const cleanup = new Cleanup();
let browser;

before(async () => {
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

// The telnetd installed, and GNU inetutils' telnetd as tests/browser/run unpacks it (scripts/unpack-deb;
// never installed), which telnetd-once runs the inetd way.
const INETUTILS_TELNETD = path.join(ROOT, 'target/debs/inetutils-telnetd/usr/sbin/telnetd');
for (const [flavour, prefix] of [
  ['the installed telnetd', []],
  ['inetutils telnetd', ['env', `TELNETD=${INETUTILS_TELNETD}`]],
]) {
  test(`telnet.html logs in on ${flavour}: login prompt, typing reaches the server`, async () => {
    const local = new Cleanup();
    const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
    try {
      const port = await freePort();
      const { proc, origin } = await startWsproxy(local, [
        '--wrap-mode=respawn', '--web', WEB, `127.0.0.1:${port}`, '--', ...prefix, TELNETD_ONCE, String(port),
      ], { name: 'telnetd' });
      await proc.waitForOutput(/the wrapped command bound port/, 10000);

      const page = await openPage(context, `${origin}/telnet.html?autoconnect=1`);
      await waitForStatus(page, 'connected');
      await waitForTerminal(page, /login: *$/m, 15000);
      const options = await page.evaluate(() => window.wsproxyTerminal.telnet.options);
      assert.ok(options.server.includes('ECHO'), `telnetd echoes: ${JSON.stringify(options)}`);
      assert.ok(options.client.includes('TTYPE') && options.client.includes('NAWS'), JSON.stringify(options));

      // The user name is echoed by the server (not by the page), then login asks for the password.
      await page.keyboard.type('wsproxy-nobody');
      await page.keyboard.press('Enter');
      const screen = await waitForTerminal(page, /Password: *$/m, 15000);
      assert.match(screen, /login: wsproxy-nobody$/m);
      await page.screenshot({ path: screenshotPath(prefix.length ? 'telnet-login-inetutils' : 'telnet-login') });

      // A wrong password: login says so and asks again.
      await page.keyboard.type('not-the-password');
      await page.keyboard.press('Enter');
      const after = await waitForTerminal(page, /Login incorrect/, 15000);
      assert.doesNotMatch(after, /not-the-password/, 'the password must not be echoed');
      assert.deepEqual(page.problems, []);
    } finally {
      await context.close();
      await local.run();
    }
  });
}

/** A telnet server that records what the client negotiates and echoes what it types. */
function startFakeTelnetd(cleanup) {
  const seen = { commands: [], subs: [], data: [], connections: 0 };
  const sockets = new Set();
  const server = net.createServer((socket) => {
    seen.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.write(Buffer.from([IAC, DO, TTYPE, IAC, DO, NAWS, IAC, WILL, ECHO, IAC, WILL, SGA]));
    socket.write('fake telnetd: héllo ✓\r\n');
    let state = 'data';
    let verb = 0;
    let sub = [];
    socket.on('data', (chunk) => {
      const echo = [];
      for (const byte of chunk) {
        if (state === 'data') {
          if (byte === IAC) state = 'iac';
          else {
            seen.data.push(byte);
            if (byte === 0 && seen.data.at(-2) === 13) echo.push(10); // CR NUL: echo CR LF
            else echo.push(byte);
          }
        } else if (state === 'iac') {
          if (byte === SB) {
            state = 'sb';
            sub = [];
          } else if ([WILL, WONT, DO, DONT].includes(byte)) {
            verb = byte;
            state = 'option';
          } else {
            if (byte === IAC) seen.data.push(IAC);
            state = 'data';
          }
        } else if (state === 'option') {
          seen.commands.push([verb, byte]);
          if (verb === WILL && byte === TTYPE) socket.write(Buffer.from([IAC, SB, TTYPE, 1, IAC, SE]));
          state = 'data';
        } else if (state === 'sb') {
          if (byte === IAC) state = 'sb-iac';
          else sub.push(byte);
        } else if (state === 'sb-iac') {
          if (byte === SE) {
            seen.subs.push(sub);
            state = 'data';
          } else {
            sub.push(byte);
            state = 'sb';
          }
        }
      }
      if (echo.length > 0) socket.write(Buffer.from(echo));
    });
  });
  cleanup.add(
    () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ port: server.address().port, seen }));
  });
}

const nawsOf = (seen) => seen.subs.filter((s) => s[0] === NAWS).map((s) => [(s[1] << 8) | s[2], (s[3] << 8) | s[4]]);

test('telnet negotiation: TERMINAL-TYPE xterm, NAWS on every resize, ECHO by the server, CR NUL', async () => {
  const local = new Cleanup();
  const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
  try {
    const fake = await startFakeTelnetd(local);
    const { origin } = await startWsproxy(local, ['--web', WEB, '127.0.0.1:0', `127.0.0.1:${fake.port}`]);
    const page = await openPage(context, `${origin}/telnet.html?autoconnect=1`);
    await waitForStatus(page, 'connected');
    await waitForTerminal(page, /fake telnetd: héllo ✓/);
    await waitUntil(() => fake.seen.subs.some((s) => s[0] === TTYPE) && nawsOf(fake.seen).length > 0, 5000,
      'TTYPE and NAWS from the page');

    const has = (verb, option) => fake.seen.commands.some(([v, o]) => v === verb && o === option);
    assert.ok(has(WILL, TTYPE) && has(WILL, NAWS) && has(DO, ECHO) && has(DO, SGA), JSON.stringify(fake.seen.commands));
    const ttype = fake.seen.subs.find((s) => s[0] === TTYPE);
    assert.deepEqual(ttype.slice(0, 2), [TTYPE, 0]);
    assert.equal(Buffer.from(ttype.slice(2)).toString('latin1'), 'xterm');

    const size = () => page.evaluate(() => [window.wsproxyTerminal.term.cols, window.wsproxyTerminal.term.rows]);
    const first = await size();
    assert.deepEqual(nawsOf(fake.seen).at(-1), first);
    assert.ok(first[0] > 40 && first[1] > 10, `a real size: ${first}`);

    // A smaller window: the terminal refits and tells the server.
    await page.setViewportSize({ width: 560, height: 360 });
    await waitUntil(async () => {
      const now = await size();
      return now[0] < first[0] && String(nawsOf(fake.seen).at(-1)) === String(now);
    }, 5000, 'a NAWS update with the smaller size');

    // Typing: the server echoes (the page must not echo too); Enter goes as CR NUL.
    fake.seen.data.length = 0;
    await page.keyboard.type('hello ✓');
    await page.keyboard.press('Enter');
    await waitUntil(() => fake.seen.data.includes(0), 5000, 'Enter at the server');
    assert.deepEqual(fake.seen.data, [...Buffer.from('hello ✓'), 13, 0]);
    const screen = await waitForTerminal(page, /hello ✓/);
    assert.equal(screen.split('hello ✓').length - 1, 1, `echoed once:\n${screen}`);
    await page.screenshot({ path: screenshotPath('telnet-negotiation') });
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
    await local.run();
  }
});
