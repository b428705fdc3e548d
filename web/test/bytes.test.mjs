// node --test web/test/: byte helpers of the terminal pages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { binaryStringBytes, formatBytes, HexView, translateEnter, utf8Bytes } from '../js/bytes.js';

test('typed text goes out as UTF-8', () => {
  assert.deepEqual([...utf8Bytes('é✓')], [0xc3, 0xa9, 0xe2, 0x9c, 0x93]);
});

test('binary strings are one byte a character', () => {
  assert.deepEqual([...binaryStringBytes('\x1b[M\xff\x80')], [0x1b, 0x5b, 0x4d, 0xff, 0x80]);
});

test('Enter translation for serial lines', () => {
  assert.equal(translateEnter('ls\r', 'cr'), 'ls\r');
  assert.equal(translateEnter('ls\r', 'lf'), 'ls\n');
  assert.equal(translateEnter('a\rb\r\n', 'crlf'), 'a\r\nb\r\n');
});

test('byte counts read well', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(5 * 1024 * 1024), '5.0 MiB');
});

test('hex view keeps its column across chunks', () => {
  const view = new HexView(4);
  assert.equal(view.format([0, 1, 0xff]), '00 01 ff');
  assert.equal(view.format([0x10, 0x20]), ' 10\r\n20');
  assert.equal(view.finish(), '\r\n');
  assert.equal(view.finish(), '');
  assert.equal(view.format([0xab]), 'ab');
});
