// The task page: task `?id=` in an edit form. It tracks the task's tags with the default
// callback, so another user's save shows the content manager's flash message; its own
// saves go to the demo store and then to the engine as an `update` change.

import { tagContent } from '/client/content-manager.js';
import { api, publishChange, setUpPage, showError, taskTags } from '/demo/app.js';

const id = Number(new URLSearchParams(location.search).get('id'));
const form = document.getElementById('task-form');
const fields = {
  title: document.getElementById('title'),
  status: document.getElementById('status'),
  assignee: document.getElementById('assignee'),
};
const saveButton = document.getElementById('save');
const saveStatus = document.getElementById('save-status');

setUpPage();
load().catch(showError);
form.addEventListener('submit', (event) => {
  event.preventDefault();
  save().catch(showError);
});

async function load() {
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new Error('No task given: open this page as task.html?id=42.');
  }

  // Tag before loading: a change that lands in between then shows the message instead
  // of going unnoticed. (Not airtight: the subscription is acknowledged a moment later.)
  const tags = await taskTags(id);
  tagContent(tags);
  document.getElementById('tracked-tags').textContent = tags.join(', ');

  fill(await api('GET', `/demo/api/tasks/${id}`));
  form.hidden = false;
}

async function save() {
  saveButton.disabled = true;
  saveStatus.textContent = 'Saving…';
  try {
    const task = await api('PUT', `/demo/api/tasks/${id}`, {
      title: fields.title.value,
      status: fields.status.value,
      assignee: fields.assignee.value,
    });
    // Only after the store has the new data: a notified page that reloads must see it.
    await publishChange('update', id);
    fill(task);
    saveStatus.dataset.saves = String(Number(saveStatus.dataset.saves) + 1);
    saveStatus.textContent = `Saved at ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    saveStatus.textContent = '';
    throw error;
  } finally {
    saveButton.disabled = false;
  }
}

function fill(task) {
  document.title = `#${task.id} ${task.title} · tagcast demo`;
  document.getElementById('task-heading').textContent = `Task #${task.id}`;
  fields.title.value = task.title;
  fields.status.value = task.status;
  const assignee = task.assignee ?? '';
  // Someone the picker does not list (created through the API) still shows.
  if (![...fields.assignee.options].some((option) => option.value === assignee)) {
    fields.assignee.add(new Option(assignee, assignee));
  }
  fields.assignee.value = assignee;
}
