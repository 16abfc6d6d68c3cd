//! The ceiling's scratch database: created beside the api's (same server), one table shaped
//! like the operation log, dropped afterwards.

use anyhow::Context;
use deadpool_postgres::Pool;
use tasksync_shared::{db, operation::Operation};
use url::Url;
use uuid::Uuid;

#[derive(Debug)]
pub struct Scratch {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl Scratch {
    /// A fresh database named `name` on the server of `database_url`, with the bench table.
    pub async fn create(database_url: &str, name: &str) -> anyhow::Result<(Self, Pool)> {
        let mut url = Url::parse(database_url).context("--database-url is not a URL")?;
        url.set_path(name);
        let mut admin = url.clone();
        admin.set_path("postgres");
        let scratch = Self {
            url: url.to_string(),
            name: name.into(),
            admin_url: admin.to_string(),
        };
        db::ensure_database(&scratch.url)
            .await
            .context("create the scratch database")?;
        let pool = db::pool(&scratch.url, 4).context("scratch pool")?;
        pool.get()
            .await?
            .batch_execute(
                "CREATE TABLE bench_ops (op_id uuid PRIMARY KEY, task_id uuid NOT NULL, \
                 user_id text NOT NULL, kind text NOT NULL, fields jsonb NOT NULL, \
                 decided_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .context("create the bench table")?;
        Ok((scratch, pool))
    }

    /// Drops the database, closing any session still in it.
    pub async fn drop_database(&self, pool: Pool) -> anyhow::Result<()> {
        pool.close();
        let admin = db::pool(&self.admin_url, 1)?;
        let statement = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name.replace('"', "\"\"")
        );
        admin
            .get()
            .await?
            .batch_execute(&statement)
            .await
            .context("drop the scratch database")?;
        Ok(())
    }
}

/// One statement (so one transaction) upserting a whole batch.
pub async fn upsert(pool: &Pool, ops: &[Operation]) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO bench_ops (op_id, task_id, user_id, kind, fields) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[]) \
             ON CONFLICT (op_id) DO UPDATE SET fields = excluded.fields, decided_at = now()",
        )
        .await?;
    let ids: Vec<Uuid> = ops.iter().map(|o| o.op_id).collect();
    let tasks: Vec<Uuid> = ops.iter().map(|o| o.task_id).collect();
    let users: Vec<&str> = ops.iter().map(|o| o.user_id.as_str()).collect();
    let kinds: Vec<&str> = ops.iter().map(|o| o.kind.as_str()).collect();
    let fields: Vec<serde_json::Value> = ops.iter().map(|o| o.fields.storable_json()).collect();
    client
        .execute(&statement, &[&ids, &tasks, &users, &kinds, &fields])
        .await?;
    Ok(())
}
