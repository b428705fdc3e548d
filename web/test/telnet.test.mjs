// node --test web/test/: the telnet protocol module on its own, byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TelnetClient, IAC, DO, DONT, WILL, WONT, SB, SE, NOP, GA, OPT } from '../js/telnet.js';

function client(options = {}) {
  const sent = [];
  const telnet = new TelnetClient({ send: (bytes) => sent.push([...bytes]), ...options });
  return { telnet, sent };
}

const text = (bytes) => Buffer.from(bytes).toString('utf8');

test('plain data passes through, UTF-8 untouched', () => {
  const { telnet, sent } = client();
  const input = Buffer.from('login: héllo ✓\r\n');
  assert.deepEqual([...telnet.receive(input)], [...input]);
  assert.deepEqual(sent, []);
});

test('IAC IAC is one 255 byte of data', () => {
  const { telnet } = client();
  assert.deepEqual([...telnet.receive([65, IAC, IAC, 66])], [65, 255, 66]);
});

test('CR NUL from the server shows as CR; CR LF stays', () => {
  const { telnet } = client();
  assert.deepEqual([...telnet.receive([65, 13, 0, 66, 13, 10])], [65, 13, 66, 13, 10]);
});

test('commands such as NOP and GA are not shown', () => {
  const { telnet } = client();
  assert.deepEqual([...telnet.receive([65, IAC, NOP, IAC, GA, 66])], [65, 66]);
});

test('server WILL ECHO and WILL SGA are accepted once, and local echo turns off', () => {
  const { telnet, sent } = client();
  assert.equal(telnet.localEcho, true);
  telnet.receive([IAC, WILL, OPT.ECHO, IAC, WILL, OPT.SGA]);
  assert.deepEqual(sent, [[IAC, DO, OPT.ECHO], [IAC, DO, OPT.SGA]]);
  assert.equal(telnet.localEcho, false);
  telnet.receive([IAC, WILL, OPT.ECHO]); // already on: no answer, no loop
  assert.equal(sent.length, 2);
  telnet.receive([IAC, WONT, OPT.ECHO]);
  assert.deepEqual(sent[2], [IAC, DONT, OPT.ECHO]);
  assert.equal(telnet.localEcho, true);
});

test('unknown options are refused', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, DO, 32 /* TSPEED */, IAC, WILL, 34 /* LINEMODE */, IAC, DO, 39 /* NEW-ENVIRON */]);
  assert.deepEqual(sent, [[IAC, WONT, 32], [IAC, DONT, 34], [IAC, WONT, 39]]);
});

test('DONT / WONT for an option that is off gets no answer', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, DONT, OPT.NAWS, IAC, WONT, OPT.ECHO]);
  assert.deepEqual(sent, []);
});

test('TERMINAL-TYPE: WILL, then IS xterm on each SEND', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, DO, OPT.TTYPE]);
  assert.deepEqual(sent.shift(), [IAC, WILL, OPT.TTYPE]);
  telnet.receive([IAC, SB, OPT.TTYPE, 1, IAC, SE]);
  assert.deepEqual(sent.shift(), [IAC, SB, OPT.TTYPE, 0, ...Buffer.from('xterm'), IAC, SE]);
  telnet.receive([IAC, SB, OPT.TTYPE, 1, IAC, SE]);
  assert.equal(text(sent.shift().slice(4, -2)), 'xterm');
});

test('TERMINAL-TYPE SEND before DO TTYPE is ignored', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, SB, OPT.TTYPE, 1, IAC, SE]);
  assert.deepEqual(sent, []);
});

test('NAWS: the size goes right after WILL, and again on every resize', () => {
  const { telnet, sent } = client({ cols: 132, rows: 43 });
  telnet.resize(100, 30); // not negotiated yet: nothing sent
  assert.deepEqual(sent, []);
  telnet.receive([IAC, DO, OPT.NAWS]);
  assert.deepEqual(sent, [[IAC, WILL, OPT.NAWS], [IAC, SB, OPT.NAWS, 0, 100, 0, 30, IAC, SE]]);
  telnet.resize(300, 255);
  assert.deepEqual(sent[2], [IAC, SB, OPT.NAWS, 1, 44, 0, 255, 255, IAC, SE]); // 255 doubled
  telnet.receive([IAC, DONT, OPT.NAWS]);
  assert.deepEqual(sent[3], [IAC, WONT, OPT.NAWS]);
  telnet.resize(80, 24);
  assert.equal(sent.length, 4);
});

test('a sequence split across chunks at every byte parses the same', () => {
  const wire = [72, 105, IAC, WILL, OPT.ECHO, IAC, DO, OPT.TTYPE, IAC, SB, OPT.TTYPE, 1, IAC, SE, IAC, IAC, 13, 0, 33];
  const whole = client();
  const shownWhole = [...whole.telnet.receive(wire)];
  const split = client();
  const shownSplit = wire.flatMap((byte) => [...split.telnet.receive([byte])]);
  assert.deepEqual(shownSplit, shownWhole);
  assert.deepEqual(shownWhole, [72, 105, 255, 13, 33]);
  assert.deepEqual(split.sent, whole.sent);
  assert.equal(whole.sent.length, 3);
});

test('an oversized subnegotiation is dropped without growing the buffer', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, DO, OPT.TTYPE]);
  sent.length = 0;
  const shown = telnet.receive([IAC, SB, OPT.TTYPE, 1, ...new Array(5000).fill(7), IAC, SE, 65]);
  assert.deepEqual([...shown], [65]);
  assert.deepEqual(sent, []);
  assert.ok(telnet.sub.length <= 1024);
});

test('typing: IAC is doubled, Enter (CR) goes as CR NUL, CR LF stays', () => {
  const { telnet } = client();
  assert.deepEqual([...telnet.encode([97, IAC, 98])], [97, IAC, IAC, 98]);
  assert.deepEqual([...telnet.encode([114, 111, 111, 116, 13])], [114, 111, 111, 116, 13, 0]);
  assert.deepEqual([...telnet.encode([13, 10])], [13, 10]);
});

test('in BINARY mode CR is sent as is', () => {
  const { telnet, sent } = client();
  telnet.receive([IAC, DO, OPT.BINARY]);
  assert.deepEqual(sent, [[IAC, WILL, OPT.BINARY]]);
  assert.deepEqual([...telnet.encode([13])], [13]);
});

test('options lists what is in force', () => {
  const { telnet } = client();
  telnet.receive([IAC, WILL, OPT.ECHO, IAC, DO, OPT.NAWS, IAC, DO, OPT.TTYPE]);
  assert.deepEqual(telnet.options, { server: ['ECHO'], client: ['NAWS', 'TTYPE'] });
});

test('send is required', () => {
  assert.throws(() => new TelnetClient({}), TypeError);
});
