// node --test web/test/: query parameters and the WebSocket URL they make.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boolParam, intParam, connectionTarget, urlHost, withQueryParam, secretParam, withoutFragment } from '../js/params.js';

const page = (href) => {
  const url = new URL(href);
  return { params: url.searchParams, location: { protocol: url.protocol, hostname: url.hostname, port: url.port } };
};
const target = (href) => {
  const { params, location } = page(href);
  return connectionTarget(params, location);
};

test('defaults to the page origin and path websockify', () => {
  assert.equal(target('http://127.0.0.1:6080/vnc.html?autoconnect=1').url, 'ws://127.0.0.1:6080/websockify');
  assert.equal(target('https://example.test/vnc.html').url, 'wss://example.test/websockify');
  assert.equal(target('http://example.test/vnc.html').url, 'ws://example.test/websockify');
});

test('host, port, path, encrypt override', () => {
  const t = target('http://127.0.0.1:6080/vnc.html?host=10.0.0.9&port=5959&path=/ws/a&encrypt=1');
  assert.equal(t.url, 'wss://10.0.0.9:5959/ws/a');
  assert.equal(t.encrypt, true);
  assert.equal(target('https://h:8443/t.html?encrypt=0').url, 'ws://h:8443/websockify');
});

test('a host without a port uses the scheme default', () => {
  assert.equal(target('http://127.0.0.1:6080/vnc.html?host=other.test').url, 'ws://other.test/websockify');
});

test('IPv6 hosts are bracketed once', () => {
  assert.equal(target('http://[::1]:6080/vnc.html').url, 'ws://[::1]:6080/websockify');
  assert.equal(target('http://127.0.0.1:6080/vnc.html?host=::1&port=7000').url, 'ws://[::1]:7000/websockify');
  assert.equal(urlHost('[::1]'), '[::1]');
  assert.equal(urlHost('localhost'), 'localhost');
});

test('token is added to the path unless it is already there', () => {
  assert.equal(target('http://h:1/vnc.html?token=abc').url, 'ws://h:1/websockify?token=abc');
  assert.equal(target('http://h:1/vnc.html?token=a%20b&path=x%3Fk%3Dv').url, 'ws://h:1/x?k=v&token=a+b');
  assert.equal(withQueryParam('p?token=old', 'token', 'new'), 'p?token=old');
});

test('boolParam and intParam', () => {
  const { params } = page('http://h/?a=1&b=false&c&d=maybe&n=42&m=x&big=99999');
  assert.equal(boolParam(params, 'a'), true);
  assert.equal(boolParam(params, 'b', true), false);
  assert.equal(boolParam(params, 'c'), true);
  assert.equal(boolParam(params, 'd', true), true);
  assert.equal(boolParam(params, 'missing'), false);
  assert.equal(intParam(params, 'n', 0), 42);
  assert.equal(intParam(params, 'm', 7), 7);
  assert.equal(intParam(params, 'big', 5, 0, 1000), 5);
});

test('the password comes from the fragment first, then the query', () => {
  const query = new URLSearchParams('password=fromquery&autoconnect=1');
  assert.equal(secretParam(query, '#password=fromfragment', 'password'), 'fromfragment');
  assert.equal(secretParam(query, '', 'password'), 'fromquery');
  assert.equal(secretParam(new URLSearchParams(''), '#password=a%26b', 'password'), 'a&b');
  assert.equal(secretParam(new URLSearchParams(''), '#other=1', 'password'), '');
  assert.equal(withoutFragment('http://h/vnc.html?a=1#password=x'), 'http://h/vnc.html?a=1');
  assert.equal(withoutFragment('http://h/vnc.html'), 'http://h/vnc.html');
});
