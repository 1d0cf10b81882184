// The reconnect delay: exponential growth of the window, the 20 s cap, and full jitter
// (the whole window from zero is used), checked with an injected random source.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffDelay } from '../content-manager.js';

const justBelowOne = () => 1 - Number.EPSILON;

test('the window starts at 0.5 s and doubles with each attempt', () => {
  const ceilings = [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelay(attempt, justBelowOne) + 1);

  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000]);
});

test('the window never grows past 20 s, however many attempts failed', () => {
  for (const attempt of [6, 7, 10, 100, 5000]) {
    assert.equal(backoffDelay(attempt, justBelowOne), 19999, `attempt ${attempt}`);
  }
});

test('full jitter: the delay spans the whole window from zero', () => {
  assert.equal(
    backoffDelay(4, () => 0),
    0,
  );
  assert.equal(
    backoffDelay(4, () => 0.25),
    2000,
  );
  assert.equal(
    backoffDelay(4, () => 0.5),
    4000,
  );
});

test('the delay stays within [0, window) for any random value', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const window = Math.min(20000, 500 * 2 ** attempt);
    for (const r of [0, 0.1, 0.37, 0.5, 0.99, justBelowOne()]) {
      const delay = backoffDelay(attempt, () => r);
      assert.ok(delay >= 0 && delay < window, `attempt ${attempt}, random ${r}: ${delay}`);
    }
  }
});

test('base and cap can be configured', () => {
  assert.equal(backoffDelay(3, justBelowOne, { baseMs: 100, capMs: 500 }), 499);
  assert.equal(backoffDelay(1, justBelowOne, { baseMs: 100, capMs: 500 }), 199);
});
