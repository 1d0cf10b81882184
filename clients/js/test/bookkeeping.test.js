// Subscription bookkeeping without a connection: reference counts across registrations,
// the union of tracked tags, the frames that move the server from one set to another, and
// the validation of tags before they reach a frame.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { TagRegistry, normalizeTags, planFrames } from '../content-manager.js';

describe('TagRegistry', () => {
  test('a tag held by two registrations stays tracked until both are removed', () => {
    const registry = new TagRegistry();
    const first = registry.add(['task_42'], undefined);
    const second = registry.add(['task_42', 'list'], undefined);

    registry.remove(first);
    assert.ok(registry.has('task_42'));

    registry.remove(second);
    assert.ok(!registry.has('task_42'));
    assert.deepEqual(registry.tags(), []);
  });

  test('tracked tags are the union of all registrations, each once', () => {
    const registry = new TagRegistry();
    registry.add(['a', 'b'], undefined);
    registry.add(['b', 'c'], undefined);

    assert.deepEqual(registry.tags().sort(), ['a', 'b', 'c']);
  });

  test('removing a registration twice releases its tags only once', () => {
    const registry = new TagRegistry();
    const first = registry.add(['a'], undefined);
    registry.add(['a'], undefined);

    registry.remove(first);
    registry.remove(first);

    assert.ok(registry.has('a'));
  });

  test('removeTags takes the tags out of every registration and drops emptied ones', () => {
    const registry = new TagRegistry();
    registry.add(['a', 'b'], undefined);
    registry.add(['a'], undefined);

    registry.removeTags(['a']);

    assert.deepEqual(registry.tags(), ['b']);
    assert.equal(registry.registrations.size, 1);
  });

  test('removeTags with a callback leaves other callbacks registrations alone', () => {
    const registry = new TagRegistry();
    const mine = () => {};
    registry.add(['a'], mine);
    registry.add(['a'], () => {});

    registry.removeTags(['a'], mine);

    assert.ok(registry.has('a'));
    assert.equal(registry.registrations.size, 1);
  });

  test('clear forgets every registration and tag', () => {
    const registry = new TagRegistry();
    registry.add(['a', 'b'], undefined);

    registry.clear();

    assert.deepEqual(registry.tags(), []);
    assert.deepEqual(registry.match(['a']), []);
  });

  test('match gives each registration only the changed tags it holds', () => {
    const registry = new TagRegistry();
    const task = registry.add(['task_42'], undefined);
    const list = registry.add(['list', 'task_43'], undefined);

    const hits = registry.match(['task_42', 'task_43', 'untracked']);

    assert.deepEqual(hits, [
      { registration: task, tags: ['task_42'] },
      { registration: list, tags: ['task_43'] },
    ]);
  });
});

describe('planFrames', () => {
  test('sends only the difference, unsubscribes first', () => {
    const frames = planFrames(['b', 'c'], ['a', 'b']);

    assert.deepEqual(frames, [
      { type: 'unsubscribe', tags: ['a'] },
      { type: 'subscribe', tags: ['c'] },
    ]);
  });

  test('sends nothing when the server already has what the page tracks', () => {
    assert.deepEqual(planFrames(['a', 'b'], ['b', 'a']), []);
  });

  test('splits a long list into frames below the size limit, each tag once', () => {
    const tags = Array.from({ length: 300 }, (_, i) => `App_Entity_Task_${i}`);

    const frames = planFrames(tags, [], 1024);

    assert.ok(frames.length > 1, 'one frame for 300 tags under 1 KiB');
    for (const frame of frames) {
      assert.equal(frame.type, 'subscribe');
      assert.ok(Buffer.byteLength(JSON.stringify(frame)) <= 1024, 'frame over the limit');
    }
    assert.deepEqual(
      frames.flatMap((frame) => frame.tags),
      tags,
    );
  });
});

describe('normalizeTags', () => {
  test('accepts one tag or a list and removes duplicates', () => {
    assert.deepEqual(normalizeTags('a'), ['a']);
    assert.deepEqual(normalizeTags(['a', 'b', 'a']), ['a', 'b']);
  });

  test('refuses empty and non-string tags', () => {
    assert.throws(() => normalizeTags(['']), TypeError);
    assert.throws(() => normalizeTags([42]), TypeError);
  });

  test('measures the length limit in UTF-8 bytes, not characters', () => {
    const fourBytes = '😀';

    assert.deepEqual(normalizeTags([fourBytes.repeat(2)], 8), [fourBytes.repeat(2)]);
    assert.throws(() => normalizeTags([fourBytes.repeat(3)], 8), TypeError);
  });
});
