//! `rest-write`: each connection creates a task, then updates it, then creates the next.

use std::sync::Arc;

use super::{Ctx, create, update};
use crate::tally::Tally;

pub async fn connection(ctx: Arc<Ctx>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut last = None;
    let mut n = (index as u64) << 40;
    while ctx.budget.take() {
        n += 1;
        last = match last {
            None => create(&ctx, &mut tally, n).await,
            Some(id) => {
                update(&ctx, &mut tally, id, n).await;
                None
            }
        };
    }
    tally
}
