// ContentManager against a fake WebSocket, clock and microtask queue: the lazy single
// socket, batching per turn, delivery of `outdated` frames to registrations, connection
// states, and reconnecting with backoff and a full resubscribe.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { State, backoffDelay } from '../content-manager.js';
import { connectedHarness, harness } from './fakes.js';

describe('socket and batching', () => {
  test('opens no socket before the first tag', () => {
    const rig = harness();
    rig.turn();

    assert.equal(rig.sockets.length, 0);
    assert.equal(rig.cm.state, State.IDLE);
  });

  test('opens one socket for the page, on the page host with the user and token', () => {
    const rig = harness({ user: 'alice', token: 't0k' });

    rig.cm.tagContent('a');
    rig.turn();
    rig.cm.tagContent('b');
    rig.turn();

    assert.equal(rig.sockets.length, 1);
    assert.equal(rig.socket().url, 'ws://tagcast.test:7070/ws?user=alice&token=t0k');
    assert.equal(rig.cm.state, State.CONNECTING);
  });

  test('every tag made in one turn goes out in one subscribe frame, on open', () => {
    const rig = harness();
    rig.cm.tagContent(['a', 'b']);
    rig.cm.tagContent('c');
    rig.turn();

    rig.socket().accept();

    assert.deepEqual(rig.frames(), [['subscribe', ['a', 'b', 'c']]]);
  });

  test('tags made while connected wait for the end of the turn and go out in one frame', () => {
    const rig = connectedHarness(['a']);

    rig.cm.tagContent('b');
    rig.cm.tagContent(['c', 'd']);
    assert.equal(rig.socket().sent.length, 1, 'sent before the turn ended');
    rig.turn();

    assert.deepEqual(rig.frames(), [
      ['subscribe', ['a']],
      ['subscribe', ['b', 'c', 'd']],
    ]);
  });

  test('tags added and removed within one turn cost nothing on the wire', () => {
    const rig = connectedHarness(['a']);

    const untag = rig.cm.tagContent('b');
    untag();
    rig.turn();

    assert.deepEqual(rig.frames(), [['subscribe', ['a']]]);
  });

  test('releasing a tag still held by another registration sends no unsubscribe', () => {
    const rig = connectedHarness(['shared']);
    const second = rig.cm.tagContent('shared');
    rig.turn();

    second();
    rig.turn();
    assert.deepEqual(rig.frames(), [['subscribe', ['shared']]]);

    rig.untag();
    rig.turn();
    assert.deepEqual(rig.frames(), [
      ['subscribe', ['shared']],
      ['unsubscribe', ['shared']],
    ]);
  });

  test('untagContent releases the tags of every registration', () => {
    const rig = connectedHarness(['a', 'b']);
    rig.cm.tagContent('a', () => {});
    rig.turn();

    rig.cm.untagContent('a');
    rig.turn();

    assert.deepEqual(rig.frames().at(-1), ['unsubscribe', ['a']]);
  });

  test('clear followed by the next page tags sends only the difference', () => {
    const rig = connectedHarness(['layout', 'task_42']);

    rig.cm.clear();
    rig.cm.tagContent(['layout', 'task_43']);
    rig.turn();

    assert.deepEqual(rig.frames().slice(1), [
      ['unsubscribe', ['task_42']],
      ['subscribe', ['task_43']],
    ]);
  });

  test('refuses a bad tag at once instead of spoiling a shared frame', () => {
    const rig = harness();

    assert.throws(() => rig.cm.tagContent(['ok', '']), TypeError);
    assert.throws(() => rig.cm.tagContent('x'.repeat(257)), TypeError);
    rig.turn();

    assert.equal(rig.sockets.length, 0);
  });
});

describe('outdated frames', () => {
  test('each callback gets the changed tags it registered', () => {
    const seen = [];
    const rig = connectedHarness(['task_42'], (tags) => seen.push(['task', tags]));
    rig.cm.tagContent(['list', 'task_43'], (tags) => seen.push(['list', tags]));
    rig.turn();

    rig.socket().push({ type: 'outdated', tags: ['task_43', 'task_42'] });

    assert.deepEqual(seen, [
      ['task', ['task_42']],
      ['list', ['task_43']],
    ]);
  });

  test('tags untagged while the frame was on its way are ignored', () => {
    const seen = [];
    const rig = connectedHarness(['task_42'], (tags) => seen.push(tags));

    rig.untag();
    rig.socket().push({ type: 'outdated', tags: ['task_42'] });

    assert.deepEqual(seen, []);
  });

  test('a throwing callback is reported and the others still run', () => {
    const seen = [];
    const rig = connectedHarness(['a'], () => {
      throw new Error('page bug');
    });
    rig.cm.tagContent('a', (tags) => seen.push(tags));
    rig.turn();

    rig.socket().push({ type: 'outdated', tags: ['a'] });

    assert.deepEqual(seen, [['a']]);
    assert.equal(rig.reported[0].message, 'page bug');
  });

  test('without a callback the flash message is shown, once while on screen', () => {
    const rig = connectedHarness(['task_42']);
    rig.cm.tagContent('task_43');
    rig.turn();

    rig.socket().push({ type: 'outdated', tags: ['task_42', 'task_43'] });
    rig.socket().push({ type: 'outdated', tags: ['task_42'] });

    const flashes = rig.document.body.children.filter((el) => el.id === 'tagcast-flash');
    assert.equal(flashes.length, 1);
  });

  test('clear dismisses the flash message of the page left behind', () => {
    const rig = connectedHarness(['task_42']);
    rig.socket().push({ type: 'outdated', tags: ['task_42'] });

    rig.cm.clear();

    assert.equal(rig.document.getElementById('tagcast-flash'), null);
  });

  test('error frames are logged with console.warn and the connection goes on', () => {
    const rig = harness();
    rig.cm.tagContent('a');
    rig.turn();
    rig.socket().accept();

    rig.socket().push({ type: 'error', code: 'too_many_tags', message: 'limit is 1000' });

    assert.match(rig.warnings.join('\n'), /too_many_tags: limit is 1000/);
    assert.equal(rig.cm.state, State.CONNECTED);
  });

  test('a frame that is not JSON is logged and ignored', () => {
    const rig = connectedHarness(['a']);

    rig.socket().push('not json');

    assert.equal(rig.warnings.length, 1);
    assert.equal(rig.cm.state, State.CONNECTED);
  });
});

describe('connection states and reconnecting', () => {
  test('connected only once the server acknowledged the subscription', () => {
    const rig = harness();
    rig.cm.tagContent('a');
    rig.turn();

    rig.socket().accept();
    assert.equal(rig.cm.state, State.CONNECTING);

    rig.socket().ackAll();
    assert.equal(rig.cm.state, State.CONNECTED);
    assert.deepEqual(rig.states, [State.CONNECTING, State.CONNECTED]);
  });

  test('after a going-away close it reconnects after the backoff, resubscribing all', () => {
    const rig = connectedHarness(['a', 'b']);
    rig.cm.tagContent('c', () => {});
    rig.turn();
    rig.random = () => 0.5;

    rig.socket().drop(1001);
    assert.equal(rig.cm.state, State.RECONNECTING);
    assert.equal(rig.sockets.length, 1);

    const delay = backoffDelay(0, () => 0.5);
    rig.clock.advance(delay - 1);
    assert.equal(rig.sockets.length, 1, 'reconnected before the backoff delay');
    rig.clock.advance(1);
    assert.equal(rig.sockets.length, 2);

    rig.socket().accept();
    assert.deepEqual(rig.frames(), [['subscribe', ['a', 'b', 'c']]]);
    rig.socket().ackAll();
    assert.equal(rig.cm.state, State.CONNECTED);
  });

  test('each failed attempt widens the backoff window, and connecting resets it', () => {
    const rig = connectedHarness(['a']);
    rig.random = () => 1 - Number.EPSILON;
    const delays = [];

    rig.socket().drop(1006);
    for (let i = 0; i < 4; i++) {
      delays.push(...rig.clock.pendingDelays().filter((ms) => ms !== 5000));
      rig.clock.advance(delays.at(-1));
      rig.socket().drop(1006);
    }
    assert.deepEqual(delays, [499, 999, 1999, 3999]);

    const pending = rig.clock.pendingDelays().filter((ms) => ms !== 5000)[0];
    rig.clock.advance(pending);
    rig.socket().accept();
    rig.socket().ackAll();
    rig.socket().drop(1001);
    assert.deepEqual(
      rig.clock.pendingDelays().sort((x, y) => x - y),
      [499, 5000],
    );
  });

  test('a short drop is silent: reconnecting, never offline', () => {
    const rig = connectedHarness(['a']);
    rig.random = () => 0;

    rig.socket().drop(1001);
    rig.clock.advance(0);
    rig.socket().accept();
    rig.socket().ackAll();
    rig.clock.advance(60000);

    assert.deepEqual(rig.states, [
      State.CONNECTING,
      State.CONNECTED,
      State.RECONNECTING,
      State.CONNECTED,
    ]);
  });

  test('offline only after offlineAfterMs without a connection, then connected again', () => {
    const rig = connectedHarness(['a']);
    rig.random = () => 0.999;

    rig.socket().drop(1006);
    rig.clock.advance(4999);
    assert.equal(rig.cm.state, State.RECONNECTING);
    for (const socket of rig.sockets.slice(1)) if (socket.readyState === 0) socket.drop(1006);

    rig.clock.advance(1);
    assert.equal(rig.cm.state, State.OFFLINE);

    rig.clock.advance(20000);
    rig.socket().accept();
    rig.socket().ackAll();
    assert.equal(rig.cm.state, State.CONNECTED);
  });

  test('tags changed while disconnected are what the next connection subscribes', () => {
    const rig = connectedHarness(['a', 'b']);
    rig.random = () => 0;
    rig.socket().drop(1001);

    rig.cm.untagContent('a');
    rig.cm.tagContent('c');
    rig.turn();
    rig.clock.advance(0);
    rig.socket().accept();

    assert.deepEqual(rig.frames(), [['subscribe', ['b', 'c']]]);
  });

  test('a connection closed while nothing is tracked is not reopened until the next tag', () => {
    const rig = connectedHarness(['a']);
    rig.untag();
    rig.turn();

    rig.socket().drop(1000);
    rig.clock.advance(60000);
    assert.equal(rig.sockets.length, 1);
    assert.equal(rig.cm.state, State.IDLE);

    rig.cm.tagContent('b');
    rig.turn();
    assert.equal(rig.sockets.length, 2);
  });

  test('configure with a new token replaces the socket and resubscribes', () => {
    const rig = connectedHarness(['a'], undefined, { user: 'alice' });
    const old = rig.socket();

    rig.cm.configure({ token: 'fresh' });

    assert.equal(old.closedByClient, 1000);
    assert.equal(rig.socket().url, 'ws://tagcast.test:7070/ws?user=alice&token=fresh');
    rig.socket().accept();
    assert.deepEqual(rig.frames(), [['subscribe', ['a']]]);
  });

  test('events of a replaced socket are ignored', () => {
    const seen = [];
    const rig = connectedHarness(['a'], (tags) => seen.push(tags));
    const old = rig.socket();
    rig.cm.configure({ token: 'fresh' });

    old.onmessage?.({ data: JSON.stringify({ type: 'outdated', tags: ['a'] }) });
    old.onclose?.({ code: 1006 });

    assert.deepEqual(seen, []);
    assert.equal(rig.sockets.length, 2);
  });

  test('close stops reconnecting for good', () => {
    const rig = connectedHarness(['a']);
    const socket = rig.socket();

    rig.cm.close();
    socket.onclose?.({ code: 1006 });
    rig.clock.advance(60000);

    assert.equal(socket.closedByClient, 1000);
    assert.equal(rig.sockets.length, 1);
  });
});
