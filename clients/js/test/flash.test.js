// The default flash message: shown once while on screen, dismissable, its Reload link
// reloads the page, and the page-facing ids and texts can be set.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULTS, showFlash } from '../content-manager.js';
import { fakeDocument, fakeLocation } from './fakes.js';

test('shows the message with a Reload link and a dismiss button', () => {
  const document = fakeDocument();

  const flash = showFlash(document, fakeLocation());

  assert.equal(document.getElementById('tagcast-flash'), flash);
  assert.match(flash.text, /This content was changed by another user\./);
  assert.equal(document.getElementById('tagcast-flash-reload').textContent, 'Reload');
  assert.ok(document.getElementById('tagcast-flash-dismiss'));
});

test('is not shown twice while one is on screen', () => {
  const document = fakeDocument();

  showFlash(document, fakeLocation());
  const second = showFlash(document, fakeLocation());

  assert.equal(second, null);
  assert.equal(document.body.children.length, 1);
});

test('is shown again after being dismissed', () => {
  const document = fakeDocument();
  showFlash(document, fakeLocation());

  document.getElementById('tagcast-flash-dismiss').click();
  assert.equal(document.getElementById('tagcast-flash'), null);

  assert.ok(showFlash(document, fakeLocation()));
});

test('the Reload link reloads the page instead of following its href', () => {
  const document = fakeDocument();
  const location = fakeLocation();
  showFlash(document, location);

  const event = document.getElementById('tagcast-flash-reload').click();

  assert.equal(location.reloads, 1);
  assert.ok(event.defaultPrevented);
});

test('adds its style sheet once', () => {
  const document = fakeDocument();

  showFlash(document, fakeLocation());
  document.getElementById('tagcast-flash-dismiss').click();
  showFlash(document, fakeLocation());

  assert.equal(document.head.children.length, 1);
});

test('takes the page id and texts from the options', () => {
  const document = fakeDocument();
  const messages = { ...DEFAULTS.messages, changed: 'Geändert.', reload: 'Neu laden' };

  showFlash(document, fakeLocation(), { flashId: 'flash', messages });

  assert.match(document.getElementById('flash').text, /Geändert\./);
  assert.equal(document.getElementById('flash-reload').textContent, 'Neu laden');
});
