// The "my tasks" page: for user `?user_id=`, tracks the tag the engine makes for that user's
// task list (`user_tasks_<id>`, from the user-tasks generator), which the user-tasks source
// publishes whenever a task is assigned to the user or taken from them. A custom callback
// shows the page's notice and adds a log entry for each change. The page connects as
// `?user=`; the engine never tells a user about their own changes, so a reassignment this
// user made (`SET LOCAL tagcast.author = '<user>'`) adds no entry.

import { tagContent } from '/client/content-manager.js';
import { api, setUpPage, showError } from '/demo/app.js';

const userId = new URLSearchParams(location.search).get('user_id') ?? '';
const notice = document.getElementById('my-tasks-notice');
const log = document.getElementById('task-log');
const form = document.getElementById('user-id-form');
const input = document.getElementById('user-id');

setUpPage();
input.value = userId;
form.addEventListener('submit', (event) => {
  event.preventDefault();
  const url = new URL(location.href);
  url.searchParams.set('user_id', input.value.trim());
  location.assign(url);
});
document.getElementById('my-tasks-dismiss').addEventListener('click', () => {
  notice.hidden = true;
});
track().catch(showError);

async function track() {
  const tracked = document.getElementById('tracked-tags');
  if (userId === '') {
    // Reached from the nav, which keeps only the user: ask for the id.
    tracked.textContent = 'nothing yet (enter a user id)';
    input.focus();
    return;
  }
  if (!/^[0-9]+$/.test(userId)) {
    throw new Error(
      `"${userId}" is not a user id: open this page as my-tasks.html?user=alice&user_id=7.`,
    );
  }

  // The engine spells the tag (POST /v1/tags), as for the other pages. Without the
  // user-tasks generator in its chain it makes none, and nothing would ever arrive.
  const { tags } = await api('POST', '/v1/tags', {
    data: { user_tasks: Number(userId) },
    collection: false,
    nested: false,
  });
  if (tags.length === 0) {
    throw new Error(
      'The engine makes no tag for user tasks: run it with config/postgres.toml, ' +
        'whose chain has the user-tasks generator.',
    );
  }

  tagContent(tags, (changed) => {
    notice.hidden = false;
    addEntry(changed);
  });
  tracked.textContent = tags.join(', ');
}

function addEntry(changed) {
  const item = document.createElement('li');
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  const text = document.createElement('span');
  text.textContent = ' A task was assigned to you or taken from you ';
  const tags = document.createElement('code');
  tags.textContent = changed.join(', ');
  item.append(time, text, tags);
  log.prepend(item);

  log.dataset.changes = String(Number(log.dataset.changes) + 1);
  document.getElementById('task-log-empty').hidden = true;
}
