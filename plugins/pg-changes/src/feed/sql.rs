//! The SQL scripts the feed can install, and the substitution that lets one script serve both
//! psql (`psql -v schema=tagcast -f install.sql`) and the source (`install_schema = true`).

/// pg-changes' install script: the outbox, cursor and watched tables and their functions.
pub const INSTALL_SQL: &str = include_str!("../../sql/install.sql");

/// Renders a psql script for the simple-query protocol: drops psql's backslash lines (the
/// defaults of its variables) and substitutes each variable of `vars` where the script says
/// `:"name"` (as an identifier), `:'name'` (as a literal) or `:name` (as it is; the caller
/// checks such values with [`is_plain_table`]). `::` casts are left alone.
pub fn render(script: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(script.len());
    for line in script.lines() {
        if line.trim_start().starts_with('\\') {
            continue;
        }
        render_line(line, vars, &mut out);
        out.push('\n');
    }
    out
}

fn render_line(line: &str, vars: &[(&str, &str)], out: &mut String) {
    let mut rest = line;
    while let Some(at) = rest.find(':') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(cast) = after.strip_prefix(':') {
            out.push_str("::");
            rest = cast;
            continue;
        }
        match substitute(after, vars) {
            Some((value, used)) => {
                out.push_str(&value);
                rest = &after[used..];
            }
            None => {
                out.push(':');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// The substitution for the text after a lone `:`, and how many bytes of it it replaces.
fn substitute(after: &str, vars: &[(&str, &str)]) -> Option<(String, usize)> {
    for (name, value) in vars {
        if let Some(tail) = after.strip_prefix('"') {
            if tail.strip_prefix(name).is_some_and(|t| t.starts_with('"')) {
                return Some((quote_ident(value), name.len() + 2));
            }
        } else if let Some(tail) = after.strip_prefix('\'') {
            if tail.strip_prefix(name).is_some_and(|t| t.starts_with('\'')) {
                return Some((quote_literal(value), name.len() + 2));
            }
        } else if let Some(tail) = after.strip_prefix(name) {
            if !tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                return Some(((*value).to_owned(), name.len()));
            }
        }
    }
    None
}

/// `name` as an SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal (standard_conforming_strings, the default since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A lowercase name that needs no quoting in SQL, at most 48 bytes so that names built from
/// it (`<schema>_outbox`, `<schema>_capture`) stay within Postgres' 63.
pub fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 48
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `name` or `schema.name`, each part a plain name.
pub fn is_plain_table(table: &str) -> bool {
    let mut parts = table.split('.');
    let ok = parts.next().is_some_and(is_plain_name);
    match (parts.next(), parts.next()) {
        (None, _) => ok,
        (Some(name), None) => ok && is_plain_name(name),
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_psql_variables_and_drops_backslash_lines() {
        let script = "\\set schema tagcast\nCREATE SCHEMA :\"schema\"; SELECT :'schema', 1::int;\nCREATE TABLE :tbl (x int); -- :schemas stays\n";
        let sql = render(script, &[("schema", "my\"s"), ("tbl", "app.tasks")]);
        assert_eq!(
            sql,
            "CREATE SCHEMA \"my\"\"s\"; SELECT 'my\"s', 1::int;\nCREATE TABLE app.tasks (x int); -- :schemas stays\n"
        );
    }

    #[test]
    fn the_install_script_keeps_no_psql_variable_after_rendering() {
        let sql = render(INSTALL_SQL, &[("schema", "tagcast")]);
        assert!(!sql.contains(":\"schema\"") && !sql.contains(":'schema'"));
        assert!(!sql.lines().any(|l| l.starts_with('\\')));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"tagcast\".outbox"));
    }

    #[test]
    fn plain_names_are_lowercase_identifiers() {
        assert!(is_plain_name("tagcast_2"));
        assert!(!is_plain_name("Tagcast"));
        assert!(!is_plain_name("2x"));
        assert!(!is_plain_name("a-b"));
        assert!(is_plain_table("public.tasks"));
        assert!(is_plain_table("tasks"));
        assert!(!is_plain_table("a.b.c"));
        assert!(!is_plain_table("public."));
    }
}
