//! `read-one` and `read-list`: reads of tasks seeded before the load.

use std::sync::Arc;

use reqwest::Method;

use super::Ctx;
use crate::tally::Tally;

/// `GET /api/tasks/{id}`, walking the seeded ids.
pub async fn one(ctx: Arc<Ctx>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut i = index;
    while ctx.budget.take() {
        let Some(id) = ctx.seeds.get(i % ctx.seeds.len().max(1)) else {
            tally.note_error(|| "nothing seeded to read".into());
            break;
        };
        i += 7;
        ctx.http
            .send(&mut tally, Method::GET, &format!("/api/tasks/{id}"), None)
            .await;
    }
    tally
}

/// `GET /api/tasks` (one page of up to 1,000 tasks).
pub async fn list(ctx: Arc<Ctx>, _index: usize) -> Tally {
    let mut tally = Tally::default();
    while ctx.budget.take() {
        ctx.http
            .send(&mut tally, Method::GET, "/api/tasks", None)
            .await;
    }
    tally
}
