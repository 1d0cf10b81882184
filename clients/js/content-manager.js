// tagcast content manager: the browser side of the wire protocol (docs/protocol.md).
//
// Owns one WebSocket per page to the engine's `/ws`, the set of tags the page tracks
// (reference-counted across `tagContent` registrations), the reconnect policy, and the
// default "content was changed" flash message. Talks to nothing else: the page's backend
// hands the page its tags (from the engine's `POST /v1/tags`), the page hands them here.
//
// The pure parts (`TagRegistry`, `planFrames`, `backoffDelay`) and the `ContentManager`
// class take every outside dependency (WebSocket constructor, timers, random source,
// document, location) as arguments, so Node's test runner drives them without a browser.
// Importing this file touches no browser global: the page-wide instance behind the plain
// functions (`tagContent`, ...) is created on first use.

/** Connection states, in the order a page usually sees them. */
export const State = Object.freeze({
  /** No socket yet: nothing has been tagged. */
  IDLE: 'idle',
  /** The first connection is being opened. */
  CONNECTING: 'connecting',
  /** Open, and the server acknowledged every tag tracked when it opened. */
  CONNECTED: 'connected',
  /** The connection dropped; retrying quietly. Changes published now are not delivered. */
  RECONNECTING: 'reconnecting',
  /** Still no connection `offlineAfterMs` after the drop; retries go on. */
  OFFLINE: 'offline',
});

export const DEFAULTS = Object.freeze({
  /** First retry window; each attempt doubles it (full jitter: the delay is random below it). */
  backoffBaseMs: 500,
  /** The window never grows past this, so a page retries at least every 20 s. */
  backoffCapMs: 20000,
  /**
   * How long a drop stays `reconnecting` before the page is told `offline`. Server restarts
   * and deploys are usually over well within it, so pages need not show anything for them.
   */
  offlineAfterMs: 5000,
  /** The server's `limits.max_tag_bytes` default; longer tags are refused before sending. */
  maxTagBytes: 256,
  /**
   * Frames are split below this size. Half the server's default `limits.max_frame_bytes`
   * (64 KiB), which closes the connection (1009) on a bigger frame.
   */
  maxFrameBytes: 32 * 1024,
  flashId: 'tagcast-flash',
  messages: Object.freeze({
    changed: 'This content was changed by another user.',
    reload: 'Reload',
    dismiss: 'Dismiss',
  }),
});

const encoder = new TextEncoder();

function byteLength(text) {
  return encoder.encode(text).length;
}

/**
 * Normalizes `tagContent`'s argument: a tag or an iterable of tags, deduplicated, each a
 * non-empty string within `maxTagBytes`. A bad tag throws rather than being sent, because
 * the server refuses a whole subscribe frame for one bad tag, and frames here carry the
 * tags of every registration made in the same turn.
 */
export function normalizeTags(tags, maxTagBytes = DEFAULTS.maxTagBytes) {
  const list = typeof tags === 'string' ? [tags] : Array.from(tags ?? []);
  for (const tag of list) {
    if (typeof tag !== 'string' || tag === '') {
      throw new TypeError(`tagcast: a tag must be a non-empty string, got ${JSON.stringify(tag)}`);
    }
    if (byteLength(tag) > maxTagBytes) {
      throw new TypeError(
        `tagcast: tag "${tag.slice(0, 40)}…" is longer than ${maxTagBytes} bytes`,
      );
    }
  }
  return [...new Set(list)];
}

/**
 * The tags a page tracks: registrations (a set of tags and a callback each) and, per tag,
 * how many registrations hold it. A tag is tracked while its count is above zero, so two
 * widgets showing the same entity can come and go independently.
 */
export class TagRegistry {
  constructor() {
    /** Live registrations, in the order they were made (callbacks run in that order). */
    this.registrations = new Set();
    /** tag → number of registrations holding it; a tag at zero is deleted. */
    this.counts = new Map();
  }

  /** Adds a registration; returns it (the handle `remove` takes). */
  add(tags, callback) {
    const registration = { tags: new Set(tags), callback };
    this.registrations.add(registration);
    for (const tag of registration.tags) {
      this.counts.set(tag, (this.counts.get(tag) ?? 0) + 1);
    }
    return registration;
  }

  /** Drops a registration; a second call for the same one does nothing. */
  remove(registration) {
    if (!this.registrations.delete(registration)) return;
    for (const tag of registration.tags) this.#release(tag);
    registration.tags.clear();
  }

  /**
   * Takes `tags` out of every registration (only those with `callback`, if given).
   * A registration left with no tag is dropped.
   */
  removeTags(tags, callback) {
    for (const registration of [...this.registrations]) {
      if (callback !== undefined && registration.callback !== callback) continue;
      for (const tag of tags) {
        if (registration.tags.delete(tag)) this.#release(tag);
      }
      if (registration.tags.size === 0) this.registrations.delete(registration);
    }
  }

  clear() {
    this.registrations.clear();
    this.counts.clear();
  }

  has(tag) {
    return this.counts.has(tag);
  }

  /** The union of all registrations' tags. */
  tags() {
    return [...this.counts.keys()];
  }

  /**
   * Which registrations an `outdated` frame concerns: each with the changed tags it holds.
   * Tags no longer tracked (untagged while the frame was on its way) match nothing.
   */
  match(changedTags) {
    const hits = [];
    for (const registration of this.registrations) {
      const mine = changedTags.filter((tag) => registration.tags.has(tag));
      if (mine.length > 0) hits.push({ registration, tags: mine });
    }
    return hits;
  }

  #release(tag) {
    const count = this.counts.get(tag);
    if (count === undefined) return;
    if (count <= 1) this.counts.delete(tag);
    else this.counts.set(tag, count - 1);
  }
}

/**
 * The frames that bring the server from `sent` (what this connection has asked for) to
 * `wanted` (what the page tracks). Unsubscribes come first, so that swapping one page's
 * tags for another's never pushes the connection over `limits.max_tags_per_connection`.
 * A list too long for one frame is split into frames below `maxFrameBytes`.
 */
export function planFrames(wanted, sent, maxFrameBytes = DEFAULTS.maxFrameBytes) {
  const wantedSet = new Set(wanted);
  const sentSet = new Set(sent);
  const drop = [...sentSet].filter((tag) => !wantedSet.has(tag));
  const add = [...wantedSet].filter((tag) => !sentSet.has(tag));
  return [
    ...chunkFrames('unsubscribe', drop, maxFrameBytes),
    ...chunkFrames('subscribe', add, maxFrameBytes),
  ];
}

function chunkFrames(type, tags, maxFrameBytes) {
  const frames = [];
  const overhead = byteLength(JSON.stringify({ type, tags: [] }));
  let current = [];
  let size = overhead;
  for (const tag of tags) {
    // The quoted tag plus its comma; a tag alone always fits, since tags are at most
    // maxTagBytes and frames are far larger.
    const cost = byteLength(JSON.stringify(tag)) + 1;
    if (current.length > 0 && size + cost > maxFrameBytes) {
      frames.push({ type, tags: current });
      current = [];
      size = overhead;
    }
    current.push(tag);
    size += cost;
  }
  if (current.length > 0) frames.push({ type, tags: current });
  return frames;
}

/**
 * Delay before reconnect attempt `attempt` (0 for the first retry): exponential backoff
 * with full jitter, uniform in [0, min(cap, base · 2^attempt)). Full jitter spreads the
 * thousands of pages that lose the same server at the same moment over the whole window,
 * instead of having them all come back in waves.
 */
export function backoffDelay(
  attempt,
  random = Math.random,
  { baseMs = DEFAULTS.backoffBaseMs, capMs = DEFAULTS.backoffCapMs } = {},
) {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

/**
 * The WebSocket URL: `url` (absolute, or relative to the page; default `/ws` on the page's
 * host, ws: or wss: after the page's protocol) with `user`, `token` and any `params` as
 * query parameters.
 */
export function buildUrl({ url, user, token, params } = {}, location = undefined) {
  const base = location?.href ?? 'http://localhost/';
  const target = new URL(url ?? '/ws', base);
  if (target.protocol === 'http:') target.protocol = 'ws:';
  if (target.protocol === 'https:') target.protocol = 'wss:';
  const query = { ...params };
  if (user != null && user !== '') query.user = user;
  if (token != null && token !== '') query.token = token;
  for (const [key, value] of Object.entries(query)) {
    if (value != null) target.searchParams.set(key, String(value));
  }
  return target.href;
}

// Class selectors beat a page's bare element rules (its `button {...}`); the sheet goes
// first in <head>, so any page rule naming the same classes wins.
const FLASH_CSS = `
.tagcast-flash{position:fixed;top:1rem;left:0;right:0;z-index:2147483000;width:max-content;
max-width:calc(100vw - 2rem);margin:0 auto;display:flex;gap:.75rem;align-items:center;
padding:.75rem 1rem;border-radius:.5rem;background:#fff8e1;color:#3e2c00;
border:1px solid #e0b700;box-shadow:0 4px 16px rgba(0,0,0,.15);font:15px/1.4 system-ui,sans-serif}
.tagcast-flash-reload{color:#0b57d0;font-weight:600}
.tagcast-flash-dismiss{margin:0;padding:0 .25rem;border:0;background:none;color:inherit;
font-size:1.25rem;line-height:1;cursor:pointer}`;

/**
 * Shows the default "content was changed" message unless one is already on screen.
 * Returns the element it added, or null when one was already shown. The element has the
 * id `flashId` and the class `tagcast-flash`; its Reload link and dismiss button have the
 * ids `${flashId}-reload` and `${flashId}-dismiss` and the classes `tagcast-flash-reload`
 * and `tagcast-flash-dismiss`.
 */
export function showFlash(
  document,
  location,
  { flashId = DEFAULTS.flashId, messages = DEFAULTS.messages } = {},
) {
  if (document.getElementById(flashId)) return null;

  if (!document.getElementById('tagcast-flash-style')) {
    const style = document.createElement('style');
    style.id = 'tagcast-flash-style';
    style.textContent = FLASH_CSS;
    (document.head ?? document.body).prepend(style);
  }

  const flash = document.createElement('div');
  flash.id = flashId;
  flash.className = 'tagcast-flash';
  flash.setAttribute('role', 'status');

  const text = document.createElement('span');
  text.textContent = messages.changed;

  const reload = document.createElement('a');
  reload.id = `${flashId}-reload`;
  reload.className = 'tagcast-flash-reload';
  reload.href = '#';
  reload.textContent = messages.reload;
  reload.addEventListener('click', (event) => {
    event.preventDefault();
    location.reload();
  });

  const dismiss = document.createElement('button');
  dismiss.id = `${flashId}-dismiss`;
  dismiss.className = 'tagcast-flash-dismiss';
  dismiss.type = 'button';
  dismiss.setAttribute('aria-label', messages.dismiss);
  dismiss.title = messages.dismiss;
  dismiss.textContent = '×';
  dismiss.addEventListener('click', () => flash.remove());

  flash.append(text, reload, dismiss);
  document.body.appendChild(flash);
  return flash;
}

/**
 * One page's connection and tags. Pages normally use the plain functions exported below,
 * which share one instance; tests and embedders construct their own with injected `env`.
 */
export class ContentManager {
  /**
   * @param options  url, user, token, params (see `buildUrl`), and any of DEFAULTS.
   * @param env      WebSocket, setTimeout, clearTimeout, queueMicrotask, random, document,
   *                 location, console, reportError; browser globals where left out.
   */
  constructor(options = {}, env = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.env = {
      WebSocket: env.WebSocket ?? globalThis.WebSocket,
      setTimeout: env.setTimeout ?? globalThis.setTimeout.bind(globalThis),
      clearTimeout: env.clearTimeout ?? globalThis.clearTimeout.bind(globalThis),
      queueMicrotask: env.queueMicrotask ?? globalThis.queueMicrotask.bind(globalThis),
      random: env.random ?? Math.random,
      document: env.document ?? globalThis.document,
      location: env.location ?? globalThis.location,
      console: env.console ?? globalThis.console,
      // An exception in one page callback must not stop the others, nor this client;
      // reportError shows it in the console as uncaught, with its stack.
      reportError:
        env.reportError ??
        globalThis.reportError?.bind(globalThis) ??
        ((error) => globalThis.console.error(error)),
    };
    this.registry = new TagRegistry();
    /** The current socket, or null before the first tag and between attempts. */
    this.socket = null;
    /** Tags this socket has asked the server for; emptied when a socket is replaced. */
    this.sent = new Set();
    /** Frames sent on this socket and not yet answered (each frame gets one reply). */
    this.unanswered = 0;
    /** Failed attempts since the last `connected`; the backoff exponent. */
    this.attempt = 0;
    this.retryTimer = null;
    this.offlineTimer = null;
    this.flushQueued = false;
    this.closed = false;
    this.stateValue = State.IDLE;
    this.listeners = new Set();
  }

  get state() {
    return this.stateValue;
  }

  /**
   * Changes the connection options. Once a socket exists, it is replaced by one with the
   * new options, and every tracked tag is subscribed again on it.
   */
  configure(options = {}) {
    this.options = { ...this.options, ...options };
    if (this.socket !== null || this.retryTimer !== null) this.#reconnectNow();
  }

  /**
   * Tracks `tags` (a tag or an array). `callback(changedTags)` runs when another user
   * changes any of them; without one, the flash message is shown. Returns a function that
   * undoes exactly this registration.
   */
  tagContent(tags, callback = undefined) {
    if (callback !== undefined && typeof callback !== 'function') {
      throw new TypeError('tagcast: the callback must be a function');
    }
    const registration = this.registry.add(normalizeTags(tags, this.options.maxTagBytes), callback);
    this.#scheduleFlush();
    return () => {
      this.registry.remove(registration);
      this.#scheduleFlush();
    };
  }

  /** Stops tracking `tags` in every registration (only those with `callback`, if given). */
  untagContent(tags, callback = undefined) {
    // Lenient on purpose: untagging something never tagged is a no-op, never an error.
    this.registry.removeTags(typeof tags === 'string' ? [tags] : Array.from(tags ?? []), callback);
    this.#scheduleFlush();
  }

  /**
   * Forgets every tag and dismisses the flash message, for client-side navigation: the
   * next page's `tagContent` calls in the same turn cost only the difference on the wire.
   */
  clear() {
    this.registry.clear();
    this.env.document?.getElementById?.(this.options.flashId)?.remove();
    this.#scheduleFlush();
  }

  /** Calls `listener({state, previous})` on every state change; returns an unsubscribe. */
  onStateChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Closes the connection for good (tests, or a page tearing the client down). */
  close() {
    this.closed = true;
    this.#clearTimers();
    this.#dropSocket();
  }

  #scheduleFlush() {
    if (this.flushQueued || this.closed) return;
    this.flushQueued = true;
    // One flush per turn: every tag/untag made by the code now running goes out as one
    // frame (one per direction), and a tag added and removed again costs nothing.
    this.env.queueMicrotask(() => {
      this.flushQueued = false;
      this.#flush();
    });
  }

  #flush() {
    if (this.closed) return;
    if (this.socket === null) {
      // Lazily opened; while a retry is pending, the retry will subscribe everything.
      if (this.retryTimer === null && this.registry.tags().length > 0) this.#connect();
      return;
    }
    if (this.socket.readyState !== 1 /* OPEN */) return; // the open handler flushes
    for (const frame of planFrames(this.registry.tags(), this.sent, this.options.maxFrameBytes)) {
      this.#send(frame);
    }
  }

  #send(frame) {
    for (const tag of frame.tags) {
      if (frame.type === 'subscribe') this.sent.add(tag);
      else this.sent.delete(tag);
    }
    this.unanswered += 1;
    this.socket.send(JSON.stringify(frame));
  }

  #connect() {
    this.retryTimer = null;
    if (this.stateValue === State.IDLE) this.#setState(State.CONNECTING);

    let socket;
    try {
      socket = new this.env.WebSocket(buildUrl(this.options, this.env.location));
    } catch (error) {
      // A malformed URL throws synchronously; retrying is all that can be done.
      this.env.console?.warn('tagcast: cannot open the WebSocket', error);
      this.#lost();
      return;
    }
    this.socket = socket;
    this.sent = new Set();
    this.unanswered = 0;

    // Events of a socket that has since been replaced are ignored.
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.#flush();
      // Nothing to subscribe: open is as connected as it gets.
      if (this.unanswered === 0) this.#connected();
    };
    socket.onmessage = (event) => {
      if (this.socket === socket) this.#receive(event.data);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.registry.tags().length > 0) {
        this.#lost();
      } else {
        // Nothing to watch: back to the lazy start; the next tag opens a socket.
        this.#clearTimers();
        this.attempt = 0;
        this.#setState(State.IDLE);
      }
    };
    // An error is always followed by close, which does the work.
    socket.onerror = () => {};
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.env.console?.warn('tagcast: ignoring a frame that is not JSON', data);
      return;
    }
    switch (frame?.type) {
      case 'subscribed':
      case 'unsubscribed':
        this.#answered();
        break;
      case 'error':
        this.env.console?.warn(`tagcast: server error ${frame.code}: ${frame.message}`);
        this.#answered();
        break;
      case 'outdated':
        this.#outdated(Array.isArray(frame.tags) ? frame.tags : []);
        break;
      default:
        // Newer servers may send types this client does not know; they are not errors.
        break;
    }
  }

  #answered() {
    this.unanswered = Math.max(0, this.unanswered - 1);
    // `connected` waits for the answers to the resubscribe: from then on, no change to a
    // tracked tag is missed (the protocol's `subscribed` guarantee).
    if (this.unanswered === 0 && this.stateValue !== State.CONNECTED) this.#connected();
  }

  #connected() {
    this.attempt = 0;
    this.#clearTimers();
    this.#setState(State.CONNECTED);
  }

  #lost() {
    // Every close is retried, 1001 (server going away) included: the page still tracks
    // its tags. A server that refuses at once (1008) is paced by the backoff, which only
    // resets on `connected`.
    if (this.closed) return;
    if (this.stateValue !== State.OFFLINE) this.#setState(State.RECONNECTING);
    if (this.offlineTimer === null) {
      this.offlineTimer = this.env.setTimeout(() => {
        this.offlineTimer = null;
        if (this.stateValue === State.RECONNECTING) this.#setState(State.OFFLINE);
      }, this.options.offlineAfterMs);
    }
    const delay = backoffDelay(this.attempt, this.env.random, {
      baseMs: this.options.backoffBaseMs,
      capMs: this.options.backoffCapMs,
    });
    this.attempt += 1;
    this.retryTimer = this.env.setTimeout(() => this.#connect(), delay);
  }

  #reconnectNow() {
    this.#dropSocket();
    this.#clearTimers();
    if (this.closed) return;
    if (this.registry.tags().length === 0) {
      this.attempt = 0;
      this.#setState(State.IDLE);
      return;
    }
    if (this.stateValue === State.CONNECTED) this.#setState(State.RECONNECTING);
    this.#connect();
  }

  #dropSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket === null) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    socket.close(1000);
  }

  #clearTimers() {
    if (this.retryTimer !== null) this.env.clearTimeout(this.retryTimer);
    if (this.offlineTimer !== null) this.env.clearTimeout(this.offlineTimer);
    this.retryTimer = null;
    this.offlineTimer = null;
  }

  #outdated(changedTags) {
    // Limitation: changes published while the connection was down are never delivered
    // (the server keeps nothing for absent connections). A page that must not miss one
    // can listen for `connected` after `reconnecting` and check its data again.
    let flash = false;
    for (const { registration, tags } of this.registry.match(changedTags)) {
      if (registration.callback === undefined) {
        flash = true;
        continue;
      }
      try {
        registration.callback(tags);
      } catch (error) {
        this.env.reportError(error);
      }
    }
    if (flash && this.env.document) {
      showFlash(this.env.document, this.env.location, this.options);
    }
  }

  #setState(state) {
    const previous = this.stateValue;
    if (state === previous) return;
    this.stateValue = state;
    for (const listener of [...this.listeners]) {
      try {
        listener({ state, previous });
      } catch (error) {
        this.env.reportError(error);
      }
    }
  }
}

// The page-wide instance behind the plain functions. Created on first use, so that
// `configure` called before any tag takes effect without a reconnect.
let pageManager = null;
let pendingOptions = {};

/** The current connection state of the page-wide instance (a live binding). */
export let state = State.IDLE;

function manager() {
  if (pageManager === null) {
    pageManager = new ContentManager(pendingOptions);
    pageManager.onStateChange((change) => {
      state = change.state;
    });
  }
  return pageManager;
}

/** Sets connection options: `{url, user, token, params, flashId, messages, ...}`. */
export function configure(options) {
  if (pageManager === null) pendingOptions = { ...pendingOptions, ...options };
  else pageManager.configure(options);
}

/** Tracks tags; see `ContentManager#tagContent`. Returns a function that untags them. */
export function tagContent(tags, callback) {
  return manager().tagContent(tags, callback);
}

/** Stops tracking tags; see `ContentManager#untagContent`. */
export function untagContent(tags, callback) {
  manager().untagContent(tags, callback);
}

/** Forgets all tags (client-side navigation). */
export function clear() {
  if (pageManager !== null) pageManager.clear();
}

/** Calls `listener({state, previous})` on every connection state change. */
export function onStateChange(listener) {
  return manager().onStateChange(listener);
}
