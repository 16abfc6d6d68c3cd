//! `batch`: each connection pushes `items`-item batches of creates, one after another.

use std::sync::Arc;

use chrono::Utc;
use reqwest::Method;

use super::{Ctx, accept_batch, batch_of_creates};
use crate::tally::Tally;

pub async fn connection(ctx: Arc<Ctx>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut n = (index as u64) << 40;
    while ctx.budget.take() {
        n += 1;
        let body = batch_of_creates(ctx.items, n);
        let sent_at = Utc::now();
        if let Some(answer) = ctx
            .http
            .send(&mut tally, Method::POST, "/api/batch", Some(&body))
            .await
        {
            if answer.status.is_success() {
                accept_batch(&mut tally, &answer.body, sent_at);
            }
        }
    }
    tally
}
