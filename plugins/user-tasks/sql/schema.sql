-- user-tasks: the tasks table of the user-task-assignment scenario, watched through the
-- pg-changes outbox. Install pg-changes' outbox first, then this:
--   psql "$DATABASE_URL" -v schema=tagcast -f plugins/pg-changes/sql/install.sql \
--                        -v tasks_table=public.tasks -f plugins/user-tasks/sql/schema.sql
-- or let the user-tasks source run both (setting `install_schema = true`). Idempotent.
--
-- The application assigns a task by writing `assignee_id`, and names the user making the
-- change in `updated_by` on every insert and update (else with `SET LOCAL tagcast.author`);
-- deletes take their author from that setting only.

\if :{?schema}
\else
\set schema tagcast
\endif
\if :{?tasks_table}
\else
\set tasks_table tasks
\endif

BEGIN;

SELECT pg_advisory_xact_lock(hashtext('tagcast pg-changes install'));

CREATE TABLE IF NOT EXISTS :tasks_table (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL,
    assignee_id bigint,
    done        boolean NOT NULL DEFAULT false,
    updated_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- "My tasks" lists are read by assignee.
CREATE INDEX IF NOT EXISTS tasks_assignee_id_idx ON :tasks_table (assignee_id);

-- Captures `assignee_id` before and after each update, which is what tells a reassignment.
SELECT :"schema".watch(:'tasks_table', key_columns => '{id}', columns => '{assignee_id}',
                       author_column => 'updated_by');

COMMIT;
