// Shared by the demo pages: who the user is (`?user=`), JSON calls to the demo store and to
// the engine's HTTP API, the user picker, and the connection-state badge. The pages own
// their content; this file owns what every page has around it.

import { configure, onStateChange, state } from '/client/content-manager.js';

/** The entity class the engine's entity-tags generator turns into tags. */
export const TASK_CLASS = 'App\\Entity\\Task';

/** The development-mode identity; none means anonymous (notified of every change). */
export const user = new URLSearchParams(location.search).get('user') || null;

// Before the first tag, so the one socket opens with the right identity. `flash` is the
// id the demo's browser test looks for.
configure({ user, flashId: 'flash' });

/** A JSON request; throws with the server's error message on a non-2xx answer. */
export async function api(method, path, body = undefined) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(data?.error?.message ?? `${method} ${path} answered ${response.status}`);
  }
  return data;
}

/**
 * The tags a page showing task `id` should track, from the engine (`POST /v1/tags`), so
 * the page never needs to know how tags are spelled.
 */
export async function taskTags(id, { collection = false } = {}) {
  const { tags } = await api('POST', '/v1/tags', {
    data: { class: TASK_CLASS, id },
    collection,
    nested: false,
  });
  return tags;
}

/**
 * Tells the engine that this user changed task `id` (`op`: insert or update). Everyone
 * tracking its tags is notified, except this user's own windows.
 */
export function publishChange(op, id) {
  return api('POST', '/v1/changes', {
    author: user,
    changes: [{ op, data: { class: TASK_CLASS, id } }],
  });
}

/** `href` with the current user kept in its query. */
export function withUser(href) {
  const url = new URL(href, location.href);
  if (user) url.searchParams.set('user', user);
  else url.searchParams.delete('user');
  return url.pathname + url.search;
}

/** Shows an error in the page's `#error` box. */
export function showError(error) {
  const box = document.getElementById('error');
  box.textContent = error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

/** Wires the user picker, the links that keep the user, and the connection badge. */
export function setUpPage() {
  const picker = document.getElementById('user');
  picker.value = user ?? '';
  picker.addEventListener('change', () => {
    const url = new URL(location.href);
    if (picker.value) url.searchParams.set('user', picker.value);
    else url.searchParams.delete('user');
    location.assign(url);
  });

  for (const link of document.querySelectorAll('a[data-keep-user]')) {
    link.href = withUser(link.getAttribute('href'));
  }

  const badge = document.getElementById('conn-state');
  const show = (current) => {
    badge.textContent = current;
    badge.dataset.state = current;
  };
  show(state);
  onStateChange(({ state: current }) => show(current));
}
