// Test doubles for content-manager.js: a scriptable WebSocket, a manual clock and microtask
// queue, and just enough of a DOM for the flash message. Everything is driven explicitly by
// the tests, so no test waits on real time. (Node's runner also loads this file as a test
// file; it declares no tests.)

import { ContentManager } from '../content-manager.js';

/** A WebSocket class whose server side the test plays; `sockets` lists every instance. */
export function fakeWebSocketClass() {
  const sockets = [];

  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0; // CONNECTING
      /** Frames the client sent, parsed. */
      this.sent = [];
      /** How many of `sent` the fake server has answered. */
      this.answered = 0;
      /** The code the client closed with, or null while it has not. */
      this.closedByClient = null;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error('send() on a socket that is not open');
      this.sent.push(JSON.parse(data));
    }

    close(code) {
      this.closedByClient = code ?? 1005;
      this.readyState = 3;
    }

    // The server's side.

    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }

    push(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }

    /** Answers every unanswered frame as a server that accepts all tags would. */
    ackAll() {
      while (this.answered < this.sent.length) {
        const frame = this.sent[this.answered++];
        const type = frame.type === 'subscribe' ? 'subscribed' : 'unsubscribed';
        this.push({ type, tags: frame.tags });
      }
    }

    drop(code = 1001) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
  }

  return { FakeWebSocket, sockets };
}

/** setTimeout/clearTimeout on a clock that only moves when `advance` is called. */
export function fakeClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  return {
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + ms, ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Delays of the timers still pending, in the order they were set. */
    pendingDelays() {
      return [...timers.values()].map((timer) => timer.ms);
    },
    /** Runs every timer due within `ms`, in time order, then sets the clock to now + ms. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due = null;
        for (const [id, timer] of timers) {
          if (timer.at <= end && (due === null || timer.at < due[1].at)) due = [id, timer];
        }
        if (due === null) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = end;
    },
  };
}

/** A microtask queue the test drains with `run()`. */
export function manualMicrotasks() {
  const queue = [];
  return {
    queueMicrotask: (fn) => queue.push(fn),
    run() {
      while (queue.length > 0) queue.shift()();
    },
  };
}

class FakeElement {
  constructor(tagName, document) {
    this.tagName = tagName.toUpperCase();
    this.ownerDocument = document;
    this.children = [];
    this.parent = null;
    this.attributes = {};
    this.listeners = {};
    this.textContent = '';
    this.id = '';
    this.className = '';
  }

  setAttribute(name, value) {
    this.attributes[name] = String(value);
  }

  addEventListener(type, listener) {
    (this.listeners[type] ??= []).push(listener);
  }

  click() {
    const event = {
      type: 'click',
      defaultPrevented: false,
      preventDefault() {
        this.defaultPrevented = true;
      },
    };
    for (const listener of this.listeners.click ?? []) listener(event);
    return event;
  }

  appendChild(child) {
    child.parent = this;
    this.children.push(child);
    return child;
  }

  prepend(child) {
    child.parent = this;
    this.children.unshift(child);
  }

  append(...children) {
    for (const child of children) this.appendChild(child);
  }

  remove() {
    if (this.parent === null) return;
    this.parent.children = this.parent.children.filter((child) => child !== this);
    this.parent = null;
  }

  /** Own text plus the text of every descendant, like the DOM's textContent getter. */
  get text() {
    return this.textContent + this.children.map((child) => child.text).join('');
  }

  *walk() {
    yield this;
    for (const child of this.children) yield* child.walk();
  }
}

/** A document with head and body, createElement and getElementById. */
export function fakeDocument() {
  const document = {
    createElement: (tag) => new FakeElement(tag, document),
    getElementById(id) {
      for (const root of [document.head, document.body]) {
        for (const element of root.walk()) if (element.id === id) return element;
      }
      return null;
    },
  };
  document.head = new FakeElement('head', document);
  document.body = new FakeElement('body', document);
  return document;
}

/** A location whose reload() is counted. */
export function fakeLocation(href = 'http://tagcast.test:7070/task.html?id=42&user=alice') {
  return {
    href,
    reloads: 0,
    reload() {
      this.reloads += 1;
    },
  };
}

/**
 * A ContentManager wired to all the fakes above, with a random source the test can set.
 * `turn()` ends the current turn (drains microtasks); `socket()` is the latest socket.
 */
export function harness(options = {}) {
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const clock = fakeClock();
  const microtasks = manualMicrotasks();
  const document = fakeDocument();
  const location = fakeLocation();
  const warnings = [];
  const reported = [];
  const states = [];
  const rig = {
    random: () => 0.5,
    sockets,
    clock,
    document,
    location,
    warnings,
    reported,
    states,
    turn: () => microtasks.run(),
    socket: () => sockets[sockets.length - 1],
    /** Every frame sent on the latest socket, as [type, tags] pairs. */
    frames: () => rig.socket().sent.map((frame) => [frame.type, frame.tags]),
  };
  rig.cm = new ContentManager(options, {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    queueMicrotask: microtasks.queueMicrotask,
    random: () => rig.random(),
    document,
    location,
    console: { warn: (...args) => warnings.push(args.join(' ')) },
    reportError: (error) => reported.push(error),
  });
  rig.cm.onStateChange(({ state }) => states.push(state));
  return rig;
}

/** Tags, opens and acknowledges: the page is `connected` with `tags` subscribed. */
export function connectedHarness(tags, callback, options) {
  const rig = harness(options);
  rig.untag = rig.cm.tagContent(tags, callback);
  rig.turn();
  rig.socket().accept();
  rig.socket().ackAll();
  return rig;
}
