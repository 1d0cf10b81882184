// End-to-end test of the demo task board in headless Chromium against the real engine:
// another user's save shows the flash message, the author's own window does not; a new
// task reaches the other user's list; and after an engine restart on the same port the
// pages reconnect, resubscribe and are notified again.
//
// Run: `node clients/js/test-browser/demo.e2e.mjs` (after `cargo build` and `npm ci` in
// clients/js). It starts `TAGCAST_BIN` (default <repo>/target/debug/tagcast) with a copy of
// the demo config, and takes the address from the JSON log line `listening`. Nothing
// waits for a guessed time: every step waits for a log line, a process exit, a page
// element or a WebSocket frame, each with a timeout.
//
// Under CI (CI=true) a missing prerequisite (Chromium, the engine binary, playwright-core)
// fails the run; elsewhere the test is skipped with the reason.
//
// Environment: TAGCAST_BIN, TAGCAST_DEMO_CONFIG (default config/demo.toml, else
// config/tagcast.toml), CHROMIUM (default /usr/bin/chromium), E2E_SCREENSHOT (default
// docs/demo-flash.png; empty to skip).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CI = ['true', '1', 'yes'].includes(String(process.env.CI ?? '').toLowerCase());
const BIN = process.env.TAGCAST_BIN || path.join(REPO, 'target/debug/tagcast');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.E2E_SCREENSHOT ?? path.join(REPO, 'docs/demo-flash.png');

const TASK_ID = 42;
/** A tag only bob's pages track, published by the test to prove delivery order. */
const PROBE_TAG = 'e2e_probe_bob';

/** How long one step may wait for the engine or a page. */
const STEP_MS = 15_000;
/**
 * Reconnecting may take a full backoff window after the engine is back: windows double
 * from 0.5 s to the 20 s cap, and the engine is down for several attempts.
 */
const RECONNECT_MS = 60_000;
/** The whole run; a hang anywhere ends in a failure, not a stuck CI job. */
const RUN_MS = 240_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const results = [];
/** Undo steps, run in reverse: browser first, so no page sees its engine die at the end. */
const cleanups = [];
/** Engine processes and the config copy, ended after the browser. */
const finalCleanups = [];

main().then(
  (code) => finish(code),
  (error) => {
    console.error(`\n${error.stack ?? error}`);
    finish(1);
  },
);

async function main() {
  const watchdog = setTimeout(() => {
    console.error(`\ndemo e2e: the run took longer than ${RUN_MS / 1000} s`);
    finish(1);
  }, RUN_MS);
  watchdog.unref();

  const prerequisites = await checkPrerequisites();
  if (prerequisites.missing) {
    if (CI) {
      console.error(`demo e2e: FAILED before starting: ${prerequisites.missing}`);
      return 1;
    }
    console.log(`demo e2e: SKIPPED: ${prerequisites.missing} (set CI=true to make this a failure)`);
    return 0;
  }
  const { chromium, config: baseConfig } = prerequisites;
  console.log(`demo e2e: engine ${BIN}, config ${baseConfig}, browser ${CHROMIUM}`);

  const configText = fs.readFileSync(baseConfig, 'utf8');
  // The copy sits beside the original: the engine resolves relative paths in a config
  // (plugin_dir, plugin libraries) against the file's own directory.
  const configCopy = path.join(path.dirname(baseConfig), `.demo-e2e-${process.pid}.toml`);
  finalCleanups.push(() => fs.rmSync(configCopy, { force: true }));

  let engine;
  await step('engine starts and logs the address it listens on', async () => {
    fs.writeFileSync(configCopy, demoConfig(configText, '127.0.0.1:0'));
    engine = await startEngine(configCopy);
  });
  const origin = `http://${engine.address}`;

  let browser;
  await step('Chromium starts', async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
    });
    cleanups.push(() => browser.close());
  });
  const alice = await openUser(browser, 'alice');
  const bob = await openUser(browser, 'bob');

  const taskUrl = (user) => `${origin}/task.html?id=${TASK_ID}&user=${user}`;
  const taskTag = await tagsOf(origin, { class: 'App\\Entity\\Task', id: TASK_ID }).then(
    (tags) => tags[0],
  );

  await step(`alice and bob open task ${TASK_ID} and both pages connect`, async () => {
    await Promise.all([alice.page.goto(taskUrl('alice')), bob.page.goto(taskUrl('bob'))]);
    for (const user of [alice, bob]) {
      await waitForConnected(user, taskTag, 0, STEP_MS);
    }
    await installProbe(bob);
  });

  await step("bob's save shows the flash message to alice, not to bob", async () => {
    await saveTitle(bob, 'Reviewed by bob');
    await alice.page.waitForSelector('#flash', { state: 'visible', timeout: STEP_MS });
    await assertNotNotified(bob, origin, taskTag);
    if (SCREENSHOT) {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await alice.page.screenshot({ path: SCREENSHOT });
      console.log(`  screenshot of alice's page: ${path.relative(REPO, SCREENSHOT)}`);
    }
  });

  await step(
    "a task bob creates shows the new-tasks notice on alice's list, not on bob's",
    async () => {
      const [aliceList, bobList] = await Promise.all([
        alice.context.newPage(),
        bob.context.newPage(),
      ]);
      // The tag that asking with collection: true adds: the one inserts publish.
      const withCollection = await tagsOf(
        origin,
        { class: 'App\\Entity\\Task', id: TASK_ID },
        true,
      );
      const collectionTag = withCollection.find((tag) => tag !== taskTag);
      if (!collectionTag)
        throw new Error(`POST /v1/tags with collection: true gave no more tags than without`);
      await Promise.all([
        aliceList.goto(`${origin}/?user=alice`),
        bobList.goto(`${origin}/?user=bob`),
      ]);
      for (const page of [aliceList, bobList]) {
        await waitForConnected({ page, name: 'list' }, collectionTag, 0, STEP_MS);
      }

      const title = `Created by bob ${Date.now()}`;
      await bobList.fill('#new-title', title);
      await bobList.click('#create');
      await bobList.getByText(title).waitFor({ timeout: STEP_MS });
      await aliceList.waitForSelector('#list-notice', { state: 'visible', timeout: STEP_MS });
      if (await bobList.isVisible('#list-notice'))
        throw new Error("bob's own list shows the notice");

      await aliceList.click('#list-reload');
      await aliceList.getByText(title).waitFor({ timeout: STEP_MS });
      await Promise.all([aliceList.close(), bobList.close()]);
    },
  );

  await step(
    'after an engine restart on the same port, both pages reconnect and resubscribe',
    async () => {
      await alice.page.click('#flash-dismiss');
      await alice.page.waitForSelector('#flash', { state: 'detached', timeout: STEP_MS });
      const sockets = { alice: await socketCount(alice), bob: await socketCount(bob) };

      await engine.stop();
      for (const user of [alice, bob]) {
        await user.page.waitForFunction(
          () => document.querySelector('#conn-state')?.dataset.state !== 'connected',
          null,
          { timeout: STEP_MS },
        );
      }

      fs.writeFileSync(configCopy, demoConfig(configText, engine.address));
      engine = await startEngine(configCopy, { retryBind: true });

      await waitForConnected(alice, taskTag, sockets.alice, RECONNECT_MS);
      await waitForConnected(bob, taskTag, sockets.bob, RECONNECT_MS);
      await waitForSubscribed(bob, PROBE_TAG, sockets.bob, STEP_MS);
    },
  );

  await step(
    "after the restart bob's save again shows the flash message to alice only",
    async () => {
      await saveTitle(bob, 'Reviewed by bob, after the restart');
      await alice.page.waitForSelector('#flash', { state: 'visible', timeout: STEP_MS });
      await assertNotNotified(bob, origin, taskTag);
    },
  );

  for (const user of [alice, bob]) {
    if (user.pageErrors.length > 0) {
      throw new Error(`${user.name}'s page threw: ${user.pageErrors.join('; ')}`);
    }
  }
  return results.some((result) => !result.ok) ? 1 : 0;
}

/** Runs one check, records it, and stops the run on the first failure. */
async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`✔ ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`✖ ${name} (${Date.now() - started} ms)`);
    throw error;
  }
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  for (const cleanup of [...cleanups.reverse(), ...finalCleanups]) {
    try {
      await cleanup();
    } catch (error) {
      console.error(`cleanup failed: ${error.message}`);
    }
  }
  if (results.length > 0) {
    const passed = results.filter((result) => result.ok).length;
    const failed = results.length - passed;
    console.log(`\ne2e: ${passed} passed, ${failed} failed`);
    if (failed > 0 || code !== 0) console.log('demo e2e: FAILED');
  }
  process.exit(code);
}

async function checkPrerequisites() {
  if (!fs.existsSync(CHROMIUM)) {
    return { missing: `no Chromium at ${CHROMIUM} (apt-get install -y chromium)` };
  }
  if (!fs.existsSync(BIN)) {
    return { missing: `no engine binary at ${BIN} (cargo build, or set TAGCAST_BIN)` };
  }
  const config = [
    process.env.TAGCAST_DEMO_CONFIG,
    path.join(REPO, 'config/demo.toml'),
    path.join(REPO, 'config/tagcast.toml'),
  ].find((candidate) => candidate && fs.existsSync(candidate));
  if (!config) {
    return { missing: 'no demo config (config/demo.toml, or set TAGCAST_DEMO_CONFIG)' };
  }
  try {
    const { chromium } = await import('playwright-core');
    return { chromium, config };
  } catch (error) {
    return { missing: `playwright-core is not installed (npm ci in clients/js): ${error.message}` };
  }
}

/** The config with the demo enabled and `[server] listen` set to `listen`. */
function demoConfig(text, listen) {
  let out = setTableKey(text, 'server', 'listen', JSON.stringify(listen));
  out = setTableKey(out, 'demo', 'enabled', 'true');
  return out;
}

/**
 * Sets `key = value` in `[table]` of a TOML text, line by line: replaces the key's line if
 * the table has one, adds it under the header if not, appends the table if there is none.
 */
function setTableKey(text, table, key, value) {
  const lines = text.split('\n');
  const header = new RegExp(`^\\s*\\[\\s*${table}\\s*\\]\\s*(#.*)?$`);
  const start = lines.findIndex((line) => header.test(line));
  if (start === -1) return `${text.replace(/\n*$/, '\n')}\n[${table}]\n${key} = ${value}\n`;

  const keyLine = new RegExp(`^\\s*${key}\\s*=`);
  for (let i = start + 1; i < lines.length && !/^\s*\[/.test(lines[i]); i++) {
    if (keyLine.test(lines[i])) {
      lines[i] = `${key} = ${value}`;
      return lines.join('\n');
    }
  }
  lines.splice(start + 1, 0, `${key} = ${value}`);
  return lines.join('\n');
}

/**
 * Starts `tagcast serve` and resolves once it logs `listening`, with its address. With
 * `retryBind`, an engine that exits before listening (the old one's port not yet free) is
 * started again, a bounded number of times.
 */
async function startEngine(config, { retryBind = false } = {}) {
  const attempts = retryBind ? 5 : 1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEngineOnce(config);
    } catch (error) {
      if (attempt >= attempts || !error.exitedEarly) throw error;
      console.log(`  engine exited before listening (attempt ${attempt}); starting it again`);
      // A port still held by the old process frees itself within moments; this only
      // paces retries after an observed failure, it does not stand in for a wait.
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

function startEngineOnce(config) {
  const child = spawn(BIN, ['serve', '--config', config, '--log-format', 'json'], {
    cwd: REPO,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = [];
  let stopping = false;
  const exited = once(child, 'exit');
  const kill = () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL');
  process.on('exit', kill);
  // Waiting for the exit lets this process reap the engine instead of leaving a zombie.
  finalCleanups.push(async () => {
    kill();
    await exited;
  });

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      kill();
      reject(
        new Error(`the engine did not log "listening" within ${STEP_MS} ms:\n${tail.join('\n')}`),
      );
    }, STEP_MS);

    // The log goes to stderr; stdout is read too, so that nothing blocks on a full pipe.
    for (const stream of [child.stderr, child.stdout]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        tail.push(line);
        if (tail.length > 40) tail.shift();
        const listening = listeningLine(line);
        if (listening === null) return;
        clearTimeout(timer);
        if (listening.demo === false) {
          kill();
          reject(new Error('the engine listens with the demo disabled ([demo] enabled = false)'));
          return;
        }
        resolve({
          address: listening.address,
          process: child,
          async stop() {
            stopping = true;
            child.kill('SIGTERM');
            const stopTimer = setTimeout(kill, STEP_MS);
            await exited;
            clearTimeout(stopTimer);
          },
        });
      });
    }

    exited.then(([code, signal]) => {
      clearTimeout(timer);
      const error = new Error(
        `the engine exited (code ${code}, signal ${signal}) before listening:\n${tail.join('\n')}`,
      );
      error.exitedEarly = true;
      reject(error); // ignored if it already resolved
      if (!stopping && !finishing) {
        // Past `listening`, nothing else would say why the pages lost their server.
        console.error(
          `  the engine exited unexpectedly (code ${code}, signal ${signal}):\n${tail.join('\n')}`,
        );
      }
    });
  });
}

/**
 * `{address, demo}` from a JSON `listening` log line (tracing's JSON format puts the
 * event's fields under `fields`), or null for any other line.
 */
function listeningLine(line) {
  let record;
  try {
    record = JSON.parse(line);
  } catch {
    return null;
  }
  const fields = record?.fields ?? record;
  if (fields?.message !== 'listening' || typeof fields.address !== 'string') return null;
  return { address: fields.address.replace(/^[a-z]+:\/\//, ''), demo: fields.demo };
}

/**
 * A browser context per user, with every WebSocket frame recorded in the page: the test
 * checks what the server sent, not only what the page made of it.
 */
async function openUser(browser, name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  cleanups.push(() => context.close());
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.__frames = [];
    window.__sockets = 0;
    window.WebSocket = class RecordingWebSocket extends Native {
      constructor(...args) {
        super(...args);
        const socket = ++window.__sockets;
        this.__socket = socket;
        const record = (dir, data) => window.__frames.push({ socket, dir, data: String(data) });
        this.addEventListener('message', (event) => record('in', event.data));
        this.addEventListener('close', (event) => record('close', event.code));
      }

      send(data) {
        window.__frames.push({ socket: this.__socket, dir: 'out', data: String(data) });
        super.send(data);
      }
    };
  });
  const page = await context.newPage();
  const user = { name, context, page, pageErrors: [] };
  page.on('pageerror', (error) => user.pageErrors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      console.log(`  [${name} console.${message.type()}] ${message.text()}`);
    }
  });
  return user;
}

async function tagsOf(origin, data, collection = false) {
  const response = await fetch(`${origin}/v1/tags`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ data, collection, nested: false }),
  });
  if (!response.ok)
    throw new Error(`POST /v1/tags answered ${response.status}: ${await response.text()}`);
  const { tags } = await response.json();
  if (!Array.isArray(tags) || tags.length === 0)
    throw new Error(`POST /v1/tags gave no tags for ${JSON.stringify(data)}`);
  return tags;
}

function socketCount(user) {
  return user.page.evaluate(() => window.__sockets);
}

/**
 * Waits until the page shows `connected` and a socket newer than `afterSocket` has had
 * `tag` acknowledged by the server.
 */
async function waitForConnected(user, tag, afterSocket, timeout) {
  await user.page.waitForSelector('#conn-state[data-state="connected"]', { timeout });
  await waitForSubscribed(user, tag, afterSocket, timeout);
}

async function waitForSubscribed(user, tag, afterSocket, timeout) {
  await user.page.waitForFunction(
    ([tag, afterSocket]) =>
      window.__frames.some((frame) => {
        if (frame.dir !== 'in' || frame.socket <= afterSocket) return false;
        const message = JSON.parse(frame.data);
        return message.type === 'subscribed' && message.tags.includes(tag);
      }),
    [tag, afterSocket],
    { timeout },
  );
}

/** Edits the title on the task page and waits until the save, change included, is done. */
async function saveTitle(user, title) {
  const saves = Number(await user.page.getAttribute('#save-status', 'data-saves'));
  await user.page.fill('#title', title);
  await user.page.click('#save');
  await user.page.waitForSelector(`#save-status[data-saves="${saves + 1}"]`, { timeout: STEP_MS });
}

/** Makes the page track PROBE_TAG (same module instance as the page's own code). */
async function installProbe(user) {
  await user.page.evaluate(async (tag) => {
    const contentManager = await import('/client/content-manager.js');
    window.__probes = 0;
    contentManager.tagContent(tag, () => {
      window.__probes += 1;
    });
  }, PROBE_TAG);
  await waitForSubscribed(user, PROBE_TAG, 0, STEP_MS);
}

/**
 * Proves `user` was not told about the change to `tag` just made: the test publishes
 * PROBE_TAG after that change, and a connection receives changes in publish order, so
 * once the probe has arrived, a notification of the change would have arrived too, in an
 * earlier frame or merged into the probe's.
 */
async function assertNotNotified(user, origin, tag) {
  const probes = await user.page.evaluate(() => window.__probes);
  const response = await fetch(`${origin}/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ author: 'e2e-probe', tags: [PROBE_TAG] }),
  });
  if (!response.ok)
    throw new Error(`POST /v1/publish answered ${response.status}: ${await response.text()}`);
  await user.page.waitForFunction((n) => window.__probes > n, probes, { timeout: STEP_MS });

  const notified = await user.page.evaluate(
    (tag) =>
      window.__frames.some((frame) => {
        if (frame.dir !== 'in') return false;
        const message = JSON.parse(frame.data);
        return message.type === 'outdated' && message.tags.includes(tag);
      }),
    tag,
  );
  if (notified)
    throw new Error(`${user.name} received an outdated frame for ${tag}, their own change`);
  if (await user.page.isVisible('#flash'))
    throw new Error(`${user.name}'s page shows the flash message`);
}
