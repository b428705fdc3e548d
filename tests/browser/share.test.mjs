// serial.html in two Chromium windows on one real QEMU chardev through `wsproxy --share`: QEMU's
// monitor on `-chardev socket,...,server=on,wait=off` takes one client, and both windows use it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Cleanup, launchBrowser, openPage, screenshotPath, startProcess, startWsproxy, tempDir, terminalText,
  waitForStatus, waitForTerminal, waitUntil, WEB,
} from './helpers.mjs';

const cleanup = new Cleanup();
let browser;
let proxy;

before(async () => {
  const dir = tempDir('share');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'monitor.sock');
  const qemu = startProcess('share-qemu', 'qemu-system-x86_64', [
    '-machine', 'none', '-nodefaults', '-display', 'none',
    '-chardev', `socket,id=mon,path=${socketPath},server=on,wait=off`,
    '-mon', 'chardev=mon,mode=readline',
  ]);
  cleanup.add(() => qemu.stop(), 'stop qemu');
  await waitUntil(() => fs.existsSync(socketPath), 15000, "QEMU's monitor socket");
  proxy = await startWsproxy(cleanup, ['--share', '--unix-target', socketPath, '--web', WEB, '127.0.0.1:0'],
    { name: 'share' });
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

test('two serial.html windows share one QEMU monitor: both see what either typed', async () => {
  const context = await browser.newContext({ viewport: { width: 800, height: 420 } });
  try {
    const first = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    await waitForStatus(first, 'connected');
    await waitForTerminal(first, /QEMU .*monitor/);
    // The second window joins the same connection: the monitor's greeting comes from the replay.
    const second = await openPage(context, `${proxy.origin}/serial.html?autoconnect=1`);
    await waitForStatus(second, 'connected');
    await waitForTerminal(second, /QEMU .*monitor/);

    await first.click('#terminal');
    await first.keyboard.type('info version');
    await first.keyboard.press('Enter');
    const version = /^\d+\.\d+\.\d+.*$/m;
    await waitForTerminal(first, version, 15000);
    await waitForTerminal(second, version, 15000);
    assert.match(await terminalText(second), /info version/, 'the second window sees the first one typing');

    await second.click('#terminal');
    await second.keyboard.type('info status');
    await second.keyboard.press('Enter');
    await waitForTerminal(second, /VM status/, 15000);
    await waitForTerminal(first, /VM status/, 15000);
    await first.screenshot({ path: screenshotPath('share-first') });
    await second.screenshot({ path: screenshotPath('share-second') });

    // The first window leaves; the second keeps the monitor.
    await first.close();
    await second.keyboard.type('info name');
    await second.keyboard.press('Enter');
    await waitUntil(async () => (await terminalText(second)).includes('info name'), 10000, 'the second window typing on');
    assert.match(proxy.proc.output(), /closed: /);
    assert.deepEqual(first.problems, []);
    assert.deepEqual(second.problems, []);
  } finally {
    await context.close();
  }
});
