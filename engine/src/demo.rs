//! The demo: an in-memory task store behind `/demo/api/tasks`, and the demo pages of
//! `clients/js/demo/` (embedded at build time) at `/`, `/task.html`, `/my-tasks.html` and
//! `/demo/*`.
//!
//! Nothing else in the engine uses this module. The pages call the store here, then the
//! engine's own `POST /v1/changes` and `POST /v1/tags`, and load the content manager from
//! `/client/content-manager.js`, which the engine serves. The "my tasks" page uses no store:
//! it tracks the tag the user-tasks source publishes, so it shows changes only when the
//! engine runs that source (config/postgres.toml).
//!
//! Limitation: the store is one process's memory, with no authentication: a restart brings
//! back the seed tasks, and anyone who reaches the port can edit them. It exists to show
//! tagcast working, not to keep data; do not enable the demo on a public listener.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

const INDEX_HTML: &str = include_str!("../../clients/js/demo/index.html");
const TASK_HTML: &str = include_str!("../../clients/js/demo/task.html");
const MY_TASKS_HTML: &str = include_str!("../../clients/js/demo/my-tasks.html");
const APP_JS: &str = include_str!("../../clients/js/demo/app.js");
const LIST_JS: &str = include_str!("../../clients/js/demo/list.js");
const TASK_JS: &str = include_str!("../../clients/js/demo/task.js");
const MY_TASKS_JS: &str = include_str!("../../clients/js/demo/my-tasks.js");
const STYLE_CSS: &str = include_str!("../../clients/js/demo/style.css");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Longest task title, in characters; keeps one request from growing the store much.
const MAX_TITLE_CHARS: usize = 200;
/// Longest assignee name, in characters.
const MAX_ASSIGNEE_CHARS: usize = 64;
/// The store refuses new tasks past this many, so a script cannot grow it without bound.
const MAX_TASKS: usize = 1_000;

/// The demo's routes, with their own store (seeded, task 42 included). Merge them into the
/// engine's router only when the demo is enabled.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset(HTML, INDEX_HTML) }))
        .route("/index.html", get(|| async { asset(HTML, INDEX_HTML) }))
        .route("/task.html", get(|| async { asset(HTML, TASK_HTML) }))
        .route(
            "/my-tasks.html",
            get(|| async { asset(HTML, MY_TASKS_HTML) }),
        )
        .route("/demo/app.js", get(|| async { asset(JAVASCRIPT, APP_JS) }))
        .route(
            "/demo/list.js",
            get(|| async { asset(JAVASCRIPT, LIST_JS) }),
        )
        .route(
            "/demo/task.js",
            get(|| async { asset(JAVASCRIPT, TASK_JS) }),
        )
        .route(
            "/demo/my-tasks.js",
            get(|| async { asset(JAVASCRIPT, MY_TASKS_JS) }),
        )
        .route("/demo/style.css", get(|| async { asset(CSS, STYLE_CSS) }))
        .route("/demo/api/tasks", get(list_tasks).post(create_task))
        .route("/demo/api/tasks/{id}", get(show_task).put(update_task))
        .with_state(Arc::new(Store::seeded()))
}

/// An embedded file. `no-cache` makes browsers revalidate, so a rebuilt engine's pages
/// show at once during development.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Open,
    InProgress,
    Done,
}

/// A task as the API shows it: `{"id":42,"title":"...","status":"open","assignee":"bob"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Task {
    id: u64,
    title: String,
    status: Status,
    /// `null` when nobody is assigned.
    assignee: Option<String>,
}

/// The body of a create or an update. On update, a field left out keeps its value; an
/// empty `assignee` unassigns the task.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskInput {
    title: Option<String>,
    status: Option<Status>,
    assignee: Option<String>,
}

/// What a demo request can get wrong; answered as `{"error":{"code":..,"message":..}}`.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("no task has the id {0}")]
    NotFound(u64),
    #[error("`{0}` is not a task id; ids are positive integers, as in /demo/api/tasks/42")]
    BadId(String),
    #[error("the body is not JSON: {0}")]
    InvalidJson(serde_json::Error),
    #[error("{0}")]
    InvalidRequest(String),
}

impl DemoError {
    /// The status and the protocol's error code (docs/protocol.md, "HTTP API").
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            DemoError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            DemoError::BadId(_) | DemoError::InvalidRequest(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            DemoError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
        }
    }
}

impl IntoResponse for DemoError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

/// The tasks, by id. Every method locks once and never across an `.await`.
#[derive(Debug)]
struct Store {
    /// Dropped with the router that holds the store.
    tasks: Mutex<BTreeMap<u64, Task>>,
}

impl Store {
    fn seeded() -> Store {
        let seed = [
            (40, "Write the release notes", Status::Open, Some("alice")),
            (
                41,
                "Fix the login redirect",
                Status::InProgress,
                Some("bob"),
            ),
            (42, "Review the tagcast demo", Status::Open, Some("bob")),
            (43, "Upgrade the Postgres driver", Status::Done, None),
        ];
        let tasks = seed
            .into_iter()
            .map(|(id, title, status, assignee)| {
                let assignee = assignee.map(str::to_owned);
                (
                    id,
                    Task {
                        id,
                        title: title.to_owned(),
                        status,
                        assignee,
                    },
                )
            })
            .collect();
        Store {
            tasks: Mutex::new(tasks),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Task>> {
        // A panic while locked cannot leave the map half-written (each insert is one
        // call), so a poisoned lock still guards consistent data.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn list(&self) -> Vec<Task> {
        self.lock().values().cloned().collect()
    }

    fn get(&self, id: u64) -> Result<Task, DemoError> {
        self.lock().get(&id).cloned().ok_or(DemoError::NotFound(id))
    }

    fn create(&self, input: TaskInput) -> Result<Task, DemoError> {
        let title = input
            .title
            .ok_or_else(|| DemoError::InvalidRequest("a new task needs a `title`".to_owned()))?;
        let title = valid_title(&title)?;
        let assignee = valid_assignee(input.assignee)?;

        let mut tasks = self.lock();
        if tasks.len() >= MAX_TASKS {
            return Err(DemoError::InvalidRequest(format!(
                "the demo store holds at most {MAX_TASKS} tasks; restart the engine to reset it"
            )));
        }
        // Ids only grow (the store never deletes), so the next one is past the largest.
        let id = tasks.last_key_value().map_or(1, |(id, _)| id + 1);
        let task = Task {
            id,
            title,
            status: input.status.unwrap_or(Status::Open),
            assignee,
        };
        tasks.insert(id, task.clone());
        Ok(task)
    }

    fn update(&self, id: u64, input: TaskInput) -> Result<Task, DemoError> {
        let title = input.title.as_deref().map(valid_title).transpose()?;
        let assignee = input
            .assignee
            .map(|name| valid_assignee(Some(name)))
            .transpose()?;

        let mut tasks = self.lock();
        let task = tasks.get_mut(&id).ok_or(DemoError::NotFound(id))?;
        if let Some(title) = title {
            task.title = title;
        }
        if let Some(status) = input.status {
            task.status = status;
        }
        if let Some(assignee) = assignee {
            task.assignee = assignee;
        }
        Ok(task.clone())
    }
}

fn valid_title(title: &str) -> Result<String, DemoError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(DemoError::InvalidRequest(
            "`title` is empty; give the task a title".to_owned(),
        ));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(DemoError::InvalidRequest(format!(
            "`title` is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(title.to_owned())
}

/// An empty or missing name means nobody.
fn valid_assignee(assignee: Option<String>) -> Result<Option<String>, DemoError> {
    let name = assignee.as_deref().map(str::trim).unwrap_or_default();
    if name.chars().count() > MAX_ASSIGNEE_CHARS {
        return Err(DemoError::InvalidRequest(format!(
            "`assignee` is longer than {MAX_ASSIGNEE_CHARS} characters"
        )));
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

fn parse_id(raw: &str) -> Result<u64, DemoError> {
    raw.parse().map_err(|_| DemoError::BadId(raw.to_owned()))
}

/// Reads the body as JSON whatever its content type: the demo's pages are its only clients.
fn parse_body(body: &[u8]) -> Result<TaskInput, DemoError> {
    serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            DemoError::InvalidRequest(err.to_string())
        } else {
            DemoError::InvalidJson(err)
        }
    })
}

async fn list_tasks(State(store): State<Arc<Store>>) -> Json<Vec<Task>> {
    Json(store.list())
}

async fn show_task(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Json<Task>, DemoError> {
    store.get(parse_id(&id)?).map(Json)
}

async fn create_task(
    State(store): State<Arc<Store>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Task>), DemoError> {
    let task = store.create(parse_body(&body)?)?;
    Ok((StatusCode::CREATED, Json(task)))
}

async fn update_task(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Task>, DemoError> {
    let id = parse_id(&id)?;
    store.update(id, parse_body(&body)?).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> TaskInput {
        parse_body(json.as_bytes()).expect("test input is valid")
    }

    #[test]
    fn routes_build_without_conflicts() {
        // axum panics at build time on overlapping routes.
        let _router = routes();
    }

    #[test]
    fn seed_includes_task_42() {
        let task = Store::seeded().get(42).expect("task 42 is seeded");
        assert_eq!(task.title, "Review the tagcast demo");
    }

    #[test]
    fn task_serializes_as_the_pages_expect() {
        let task = Store::seeded().get(41).expect("task 41 is seeded");
        let json = serde_json::to_value(task).expect("a task serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "id": 41, "title": "Fix the login redirect",
                "status": "in_progress", "assignee": "bob"
            })
        );
    }

    #[test]
    fn create_gives_the_next_id_and_defaults_to_open() {
        let store = Store::seeded();
        let task = store
            .create(input(r#"{"title":"  Ship it  "}"#))
            .expect("valid task");
        assert_eq!(
            task,
            Task {
                id: 44,
                title: "Ship it".into(),
                status: Status::Open,
                assignee: None
            }
        );
        assert_eq!(store.get(44).expect("stored").title, "Ship it");
    }

    #[test]
    fn create_refuses_a_blank_or_missing_title() {
        let store = Store::seeded();
        assert!(matches!(
            store.create(input(r#"{"title":"  "}"#)),
            Err(DemoError::InvalidRequest(_))
        ));
        assert!(matches!(
            store.create(input("{}")),
            Err(DemoError::InvalidRequest(_))
        ));
        assert_eq!(store.list().len(), 4);
    }

    #[test]
    fn update_changes_given_fields_and_keeps_the_others() {
        let store = Store::seeded();
        let task = store
            .update(42, input(r#"{"status":"done","assignee":""}"#))
            .expect("updated");
        assert_eq!(task.title, "Review the tagcast demo");
        assert_eq!(task.status, Status::Done);
        assert_eq!(task.assignee, None);
    }

    #[test]
    fn update_of_an_unknown_task_is_not_found() {
        let store = Store::seeded();
        assert!(matches!(
            store.update(7, input("{}")),
            Err(DemoError::NotFound(7))
        ));
    }

    #[test]
    fn bodies_tell_bad_json_from_bad_fields() {
        assert!(matches!(parse_body(b"{"), Err(DemoError::InvalidJson(_))));
        assert!(matches!(
            parse_body(br#"{"colour":"red"}"#),
            Err(DemoError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_body(br#"{"status":"later"}"#),
            Err(DemoError::InvalidRequest(_))
        ));
    }

    #[test]
    fn ids_must_be_numbers() {
        assert!(matches!(parse_id("abc"), Err(DemoError::BadId(_))));
        assert_eq!(parse_id("42").expect("a number"), 42);
    }

    #[tokio::test]
    async fn errors_answer_with_the_protocol_error_body() {
        let response = DemoError::NotFound(7).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);

        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("small body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["message"], "no task has the id 7");
    }
}
