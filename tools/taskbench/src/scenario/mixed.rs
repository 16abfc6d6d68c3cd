//! `mixed`: in every ten requests of a connection, two creates, two updates (of the tasks it
//! created) and six `GET /api/tasks/{id}` of seeded tasks.

use std::sync::Arc;

use reqwest::Method;
use uuid::Uuid;

use super::{Ctx, create, update};
use crate::tally::Tally;

pub async fn connection(ctx: Arc<Ctx>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut mine: Vec<Uuid> = Vec::new();
    let mut n = (index as u64) << 40;
    while ctx.budget.take() {
        n += 1;
        match n % 10 {
            0 | 5 => mine.extend(create(&ctx, &mut tally, n).await),
            1 | 6 if !mine.is_empty() => {
                let id = mine[(n as usize) % mine.len()];
                update(&ctx, &mut tally, id, n).await;
            }
            _ => {
                let seeds = &ctx.seeds;
                let Some(id) = seeds.get((n as usize).wrapping_mul(31) % seeds.len().max(1)) else {
                    tally.note_error(|| "nothing seeded to read".into());
                    break;
                };
                ctx.http
                    .send(&mut tally, Method::GET, &format!("/api/tasks/{id}"), None)
                    .await;
            }
        }
    }
    tally
}
