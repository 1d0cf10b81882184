-- pg-changes: the outbox that tagcast's pg-changes and user-tasks sources read.
--
-- Installs, in one schema (default `tagcast`):
--   outbox     one row per row change of a watched table, written by the trigger;
--   cursor     per consumer, the last outbox row handed on to the engine;
--   watched    which tables are watched, and with which columns;
--   capture()  the trigger function;
--   watch(), unwatch()  attach the trigger to a table, or take it off.
--
-- Run it with psql (any number of times: every statement is idempotent):
--   psql "$DATABASE_URL" -v schema=tagcast -f plugins/pg-changes/sql/install.sql
-- or let the source run it at start-up (setting `install_schema = true`), which substitutes
-- the schema the same way. The lines starting with a backslash are psql's; the source skips
-- them. Then watch a table:
--   SELECT tagcast.watch('public.tasks', key_columns => '{id}', author_column => 'updated_by');
-- and have the application name the author of a change when the row does not:
--   SET LOCAL tagcast.author = 'alice';
--
-- Why rows carry `xid`, and the rule the reader follows with it: docs/sources.md.

\if :{?schema}
\else
\set schema tagcast
\endif

BEGIN;

-- Several engines may start at once with `install_schema = true`; CREATE ... IF NOT EXISTS
-- and CREATE OR REPLACE are not safe against a concurrent run of the same statement.
SELECT pg_advisory_xact_lock(hashtext('tagcast pg-changes install'));

CREATE SCHEMA IF NOT EXISTS :"schema";
-- For the DO block below, which cannot see psql's variables.
SET LOCAL search_path = :"schema", pg_catalog;

CREATE TABLE IF NOT EXISTS :"schema".outbox (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: the reader hands rows on in (xid, id) order and only once
    -- every transaction that could still add a row before them has ended.
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- The watched table as schema.name, unquoted.
    table_name text NOT NULL,
    op         text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    -- The key column values, as a JSON array in key column order.
    key        jsonb NOT NULL,
    author     text,
    -- The captured columns of the row (the old row for a delete), as a JSON object.
    data       jsonb,
    -- For an update: the captured columns as they were before it.
    old        jsonb
);

-- CREATE INDEX IF NOT EXISTS locks the table before it sees the index exists, so a re-run
-- would queue behind every open transaction that wrote to the outbox, and every writer of a
-- watched table behind it. Look first.
DO $indexes$
BEGIN
    IF to_regclass('outbox_xid_id_idx') IS NULL THEN
        CREATE INDEX outbox_xid_id_idx ON outbox (xid, id);
    END IF;
    IF to_regclass('outbox_at_idx') IS NULL THEN
        CREATE INDEX outbox_at_idx ON outbox (at);
    END IF;
END
$indexes$;

CREATE TABLE IF NOT EXISTS :"schema".cursor (
    consumer   text PRIMARY KEY,
    -- The outbox row reached, (last_xid, last_id), ...
    last_xid   xid8 NOT NULL,
    last_id    bigint NOT NULL,
    -- ... and how many of its changes were handed on; NULL when all of them were. A row can
    -- make several changes (user-tasks: one per affected user).
    last_part  integer,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS :"schema".watched (
    relation       regclass PRIMARY KEY,
    key_columns    text[] NOT NULL,
    columns        text[] NOT NULL DEFAULT '{}',
    author_column  text,
    author_setting text NOT NULL
);

-- The key column values of a row, as a JSON array in key column order.
CREATE OR REPLACE FUNCTION :"schema".key_of(r jsonb, names text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $key_of$
    SELECT jsonb_agg(r -> k.name ORDER BY k.n) FROM unnest(names) WITH ORDINALITY AS k(name, n)
$key_of$;

-- The named columns of a row, as a JSON object; NULL when no column is named.
CREATE OR REPLACE FUNCTION :"schema".columns_of(r jsonb, names text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $columns_of$
    SELECT jsonb_object_agg(c.name, r -> c.name) FROM unnest(names) AS c(name)
$columns_of$;

-- The trigger function. Its arguments are written by watch(): the table's name, the key
-- columns, the captured columns, the author column ('' for none) and the author setting.
-- The name comes as an argument rather than from TG_TABLE_NAME so that the partitions of a
-- watched partitioned table report the parent.
--
-- Limitation: TRUNCATE fires no row trigger, so it is not captured; a truncated table's
-- subscribers are not told.
CREATE OR REPLACE FUNCTION :"schema".capture() RETURNS trigger
LANGUAGE plpgsql
SET search_path = :"schema", pg_catalog
AS $capture$
DECLARE
    v_table          text   := TG_ARGV[0];
    v_key_columns    text[] := TG_ARGV[1]::text[];
    v_columns        text[] := TG_ARGV[2]::text[];
    v_author_column  text   := nullif(TG_ARGV[3], '');
    v_session_author text   := nullif(current_setting(TG_ARGV[4], true), '');
    v_new            jsonb;
    v_old            jsonb;
    v_new_key        jsonb;
    v_old_key        jsonb;
    v_author         text;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        v_new := to_jsonb(NEW);
        v_new_key := key_of(v_new, v_key_columns);
        v_author := coalesce(nullif(v_new ->> v_author_column, ''), v_session_author);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := to_jsonb(OLD);
        v_old_key := key_of(v_old, v_key_columns);
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox (table_name, op, key, author, data)
        VALUES (v_table, 'insert', v_new_key, v_author, columns_of(v_new, v_columns));
    ELSIF TG_OP = 'DELETE' THEN
        -- The author column names whoever wrote the row last, not whoever deletes it: only
        -- the session setting can name the deleter. A wrong author would keep the news from
        -- someone; no author only tells the deleter too.
        INSERT INTO outbox (table_name, op, key, author, data)
        VALUES (v_table, 'delete', v_old_key, v_session_author, columns_of(v_old, v_columns));
    ELSIF v_new = v_old THEN
        -- An update that changed nothing outdates nothing.
        RETURN NULL;
    ELSIF v_new_key IS DISTINCT FROM v_old_key THEN
        -- A new key makes it another record: the old one is gone and a new one appeared.
        INSERT INTO outbox (table_name, op, key, author, data)
        VALUES (v_table, 'delete', v_old_key, v_author, columns_of(v_old, v_columns)),
               (v_table, 'insert', v_new_key, v_author, columns_of(v_new, v_columns));
    ELSE
        INSERT INTO outbox (table_name, op, key, author, data, old)
        VALUES (v_table, 'update', v_new_key, v_author, columns_of(v_new, v_columns),
                columns_of(v_old, v_columns));
    END IF;

    -- Only a wake-up: the reader reads the outbox, never the payload. Postgres folds equal
    -- notifications of one transaction into one.
    PERFORM pg_notify(current_schema() || '_outbox', '');
    RETURN NULL;
END
$capture$;

-- Attaches the capture trigger to `target`, or updates it. Columns accumulate: when two
-- consumers watch one table for different columns, the trigger captures both sets, so one
-- consumer's watch() never takes columns away from another. To drop columns, unwatch() and
-- watch again. The key columns, the author column and the author setting must agree with an
-- earlier watch() of the same table (an author column left NULL keeps the earlier one).
CREATE OR REPLACE FUNCTION :"schema".watch(
    target         regclass,
    key_columns    text[] DEFAULT '{id}',
    columns        text[] DEFAULT '{}',
    author_column  text DEFAULT NULL,
    author_setting text DEFAULT 'tagcast.author'
) RETURNS void
LANGUAGE plpgsql
SET search_path = :"schema", pg_catalog
AS $watch$
#variable_conflict use_variable
DECLARE
    v_name    text;
    v_missing text;
    v_prev    watched%ROWTYPE;
    v_known   boolean;
    v_columns text[] := columns;
    v_trigger text := current_schema() || '_capture';
BEGIN
    SELECT n.nspname || '.' || c.relname INTO v_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = target;

    IF coalesce(cardinality(key_columns), 0) = 0 THEN
        RAISE EXCEPTION 'tagcast.watch(%): name at least one key column', target;
    END IF;
    IF position('.' IN author_setting) = 0 THEN
        RAISE EXCEPTION 'tagcast.watch(%): author setting "%" needs a prefix, as in tagcast.author',
            target, author_setting;
    END IF;
    SELECT col INTO v_missing
    FROM unnest(key_columns || columns || array_remove(ARRAY[author_column], NULL)) AS col
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_attribute a
        WHERE a.attrelid = target AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped)
    LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'tagcast.watch(%): the table has no column "%"', target, v_missing;
    END IF;

    SELECT * INTO v_prev FROM watched w WHERE w.relation = target FOR UPDATE;
    v_known := FOUND;
    IF v_known THEN
        IF v_prev.key_columns <> key_columns THEN
            RAISE EXCEPTION 'tagcast.watch(%): already watched with key columns %; unwatch it first to change them',
                target, v_prev.key_columns;
        END IF;
        IF author_column IS NULL THEN
            author_column := v_prev.author_column;
        ELSIF v_prev.author_column IS NOT NULL AND v_prev.author_column <> author_column THEN
            RAISE EXCEPTION 'tagcast.watch(%): already watched with author column "%"; unwatch it first to change it',
                target, v_prev.author_column;
        END IF;
        IF v_prev.author_setting <> author_setting THEN
            RAISE EXCEPTION 'tagcast.watch(%): already watched with author setting "%"; unwatch it first to change it',
                target, v_prev.author_setting;
        END IF;
        v_columns := v_prev.columns || columns;
    END IF;
    v_columns := ARRAY(SELECT DISTINCT c FROM unnest(v_columns) AS c ORDER BY c);

    -- Nothing new: leave the trigger alone. Replacing it locks the table against writers
    -- and waits for every open transaction that wrote to it, on every engine start.
    IF v_known AND v_columns = v_prev.columns
        AND author_column IS NOT DISTINCT FROM v_prev.author_column
        AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = target AND t.tgname = v_trigger)
    THEN
        RETURN;
    END IF;

    INSERT INTO watched AS w (relation, key_columns, columns, author_column, author_setting)
    VALUES (target, key_columns, v_columns, author_column, author_setting)
    ON CONFLICT (relation) DO UPDATE
    SET columns = EXCLUDED.columns, author_column = EXCLUDED.author_column;

    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_trigger, target);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
        'EXECUTE FUNCTION %I.capture(%L, %L, %L, %L, %L)',
        v_trigger, target, current_schema(), v_name, key_columns, v_columns,
        coalesce(author_column, ''), author_setting);
END
$watch$;

-- Takes the capture trigger off `target` and forgets how it was watched.
CREATE OR REPLACE FUNCTION :"schema".unwatch(target regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = :"schema", pg_catalog
AS $unwatch$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', current_schema() || '_capture', target);
    DELETE FROM watched w WHERE w.relation = target;
END
$unwatch$;

COMMIT;
