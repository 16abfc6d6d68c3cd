//! [`ApiClient`]: one method per endpoint of the api (SPEC §3), for any api a test reaches —
//! the stack's own, an extra one ([`crate::ExtraApi`]) or a child process. Every method answers
//! a [`Reply`]: the status, the headers and the JSON body, readable as typed values.

use chrono::Utc;
use reqwest::{Method, header::HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tasksync_shared::model::Task;

/// An HTTP answer: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the SPEC §3 error body and returns its message.
    pub fn error_message(&self, path: &str) -> String {
        let error = self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {self:?}"));
        assert_eq!(self.body["path"], path, "{self:?}");
        let ts = self.body["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
        error.to_string()
    }

    /// The body read as `T`; fails the test when it is not one.
    pub fn typed<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("not a {} ({e}): {self:?}", std::any::type_name::<T>()))
    }

    /// The body as one task.
    pub fn task(&self) -> Task {
        self.typed()
    }

    /// The body as a list of tasks.
    pub fn tasks(&self) -> Vec<Task> {
        self.typed()
    }

    /// The `Operation-Id` header of an accepted write.
    pub fn operation_id(&self) -> uuid::Uuid {
        self.header("operation-id")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no operation-id in {self:?}"))
    }
}

/// A client of one api, addressed by its base URL (ending in `/api`).
#[derive(Clone, Debug)]
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
}

impl ApiClient {
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into(),
        }
    }

    /// Any request with a JSON body (or none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request, headers).await
    }

    /// Any request with a body sent as given (malformed JSON, other content types).
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let request = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        send(request, headers).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[]).await
    }

    /// `POST /api/tasks`.
    pub async fn create_task(&self, body: Value) -> Reply {
        self.request(Method::POST, "/tasks", Some(body), &[]).await
    }

    /// `GET /api/tasks`.
    pub async fn list_tasks(&self) -> Reply {
        self.get("/tasks").await
    }

    /// `GET /api/tasks/{id}`.
    pub async fn get_task(&self, id: &str) -> Reply {
        self.get(&format!("/tasks/{id}")).await
    }

    /// `POST /api/tasks` with `Prefer: respond-async`: answered once published (202).
    pub async fn create_task_async(&self, body: Value) -> Reply {
        self.request(Method::POST, "/tasks", Some(body), &[RESPOND_ASYNC])
            .await
    }

    /// `PUT /api/tasks/{id}` with `Prefer: respond-async`: answered once published (202).
    pub async fn update_task_async(&self, id: &str, body: Value) -> Reply {
        let path = format!("/tasks/{id}");
        self.request(Method::PUT, &path, Some(body), &[RESPOND_ASYNC])
            .await
    }

    /// `PUT /api/tasks/{id}`.
    pub async fn update_task(&self, id: &str, body: Value) -> Reply {
        self.request(Method::PUT, &format!("/tasks/{id}"), Some(body), &[])
            .await
    }

    /// `DELETE /api/tasks/{id}`.
    pub async fn delete_task(&self, id: &str) -> Reply {
        self.request(Method::DELETE, &format!("/tasks/{id}"), None, &[])
            .await
    }

    /// `POST /api/batch`.
    pub async fn push(&self, items: &[Value]) -> Reply {
        self.push_to("/batch", items, &[]).await
    }

    /// `POST /api/sync`.
    pub async fn sync(&self, items: &[Value]) -> Reply {
        self.push_to("/sync", items, &[]).await
    }

    /// A push of `items` to `path` (`/batch` or `/sync`) with extra headers.
    pub async fn push_to(&self, path: &str, items: &[Value], headers: &[(&str, &str)]) -> Reply {
        let body = json!({ "items": items, "client_timestamp": Utc::now() });
        self.request(Method::POST, path, Some(body), headers).await
    }

    /// `GET /api/changes`.
    pub async fn changes(&self, since: &str, limit: Option<usize>) -> Reply {
        let mut path = format!("/changes?since={since}");
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        self.get(&path).await
    }

    /// `GET /api/devices`.
    pub async fn devices(&self) -> Reply {
        self.get("/devices").await
    }

    /// `GET /api/tasks/{id}/conflicts?{query}`.
    pub async fn conflicts(&self, task: &str, query: &str) -> Reply {
        self.get(&format!("/tasks/{task}/conflicts?{query}")).await
    }

    /// `GET /api/changes` from the device `device` (`Device-Id`).
    pub async fn changes_from(&self, device: &str, since: &str) -> Reply {
        let path = format!("/changes?since={since}");
        self.request(Method::GET, &path, None, &[("Device-Id", device)])
            .await
    }

    /// `GET /api/sync/operations/{op_id}`.
    pub async fn operation(&self, op_id: &str) -> Reply {
        self.get(&format!("/sync/operations/{op_id}")).await
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Reply {
        self.get("/status").await
    }

    /// `GET /api/health`.
    pub async fn health(&self) -> Reply {
        self.get("/health").await
    }

    /// `GET /api/ready`.
    pub async fn ready(&self) -> Reply {
        self.get("/ready").await
    }

    /// Whether the api answers `/api/ready` with 200; false also when nothing listens yet (an
    /// api process still starting), where the other methods fail the test.
    pub async fn is_ready(&self) -> bool {
        let answer = self.http.get(format!("{}/ready", self.base)).send().await;
        answer.is_ok_and(|r| r.status() == 200)
    }

    /// Whether the api answers `/api/health` with 200 (it serves, whatever its dependencies
    /// say); false also when nothing listens yet.
    pub async fn is_serving(&self) -> bool {
        let answer = self.http.get(format!("{}/health", self.base)).send().await;
        answer.is_ok_and(|r| r.status() == 200)
    }
}

/// The header asking a write to be answered once published, not once applied (SPEC §3).
const RESPOND_ASYNC: (&str, &str) = ("Prefer", "respond-async");

async fn send(mut request: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Reply {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("http request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("http body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Reply {
        status,
        headers,
        body,
    }
}
