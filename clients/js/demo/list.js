// The task list page: lists the tasks, creates new ones, and tracks the tags of every
// listed task with the collection tag (inserts produce it), through a custom callback
// that shows the page's own "tasks changed" notice instead of the default flash.

import { tagContent } from '/client/content-manager.js';
import { api, publishChange, setUpPage, showError, taskTags, withUser } from '/demo/app.js';

const list = document.getElementById('tasks');
const notice = document.getElementById('list-notice');
const form = document.getElementById('new-task');
const createButton = document.getElementById('create');
const createStatus = document.getElementById('create-status');

/** Undoes the registration of the tasks on screen; replaced on each reload. */
let untagShown = null;

setUpPage();
reload().catch(showError);
document.getElementById('list-reload').addEventListener('click', () => reload().catch(showError));
form.addEventListener('submit', (event) => {
  event.preventDefault();
  create().catch(showError);
});

async function reload() {
  // Hidden before fetching, so a change that arrives during the fetch shows it again.
  notice.hidden = true;
  const tasks = await api('GET', '/demo/api/tasks');
  render(tasks);

  // collection: true adds the task collection tag to each task's own tags, so the list
  // hears about new tasks as well as edits. (With no task listed there would be nothing
  // to ask about; the demo store never deletes, and starts with some.)
  const tags = (
    await Promise.all(tasks.map((task) => taskTags(task.id, { collection: true })))
  ).flat();

  // Registering the new set before dropping the old one, in the same turn: tags in both
  // never leave the server, and only the difference goes over the wire.
  const previous = untagShown;
  untagShown = tagContent(tags, () => {
    notice.hidden = false;
  });
  previous?.();
  document.getElementById('tracked-tags').textContent = [...new Set(tags)].join(', ');
}

async function create() {
  createButton.disabled = true;
  createStatus.textContent = 'Creating…';
  try {
    const title = document.getElementById('new-title');
    const task = await api('POST', '/demo/api/tasks', {
      title: title.value,
      assignee: document.getElementById('new-assignee').value,
    });
    await publishChange('insert', task.id);
    // The engine never tells this user about their own change: refresh here.
    await reload();
    title.value = '';
    createStatus.textContent = `Created task #${task.id}.`;
  } catch (error) {
    createStatus.textContent = '';
    throw error;
  } finally {
    createButton.disabled = false;
  }
}

function render(tasks) {
  list.replaceChildren(
    ...tasks.map((task) => {
      const item = document.createElement('li');
      item.dataset.taskId = String(task.id);

      const link = document.createElement('a');
      link.className = 'title';
      link.href = withUser(`/task.html?id=${task.id}`);
      link.textContent = `#${task.id} ${task.title}`;

      const status = document.createElement('span');
      status.className = 'badge';
      status.textContent = task.status.replace('_', ' ');

      const assignee = document.createElement('span');
      assignee.className = 'muted';
      assignee.textContent = task.assignee ?? 'nobody';

      item.append(link, status, assignee);
      return item;
    }),
  );
}
