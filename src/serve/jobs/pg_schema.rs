//! The PostgreSQL schema as numbered migrations, applied at start.
//!
//! Hand-written rather than with a migration crate (refinery, sqlx's
//! migrator): replicas start together, so the check and the migrations run
//! in one transaction under an advisory lock, and the whole thing is a
//! table of versions and a loop. A database migrated by a newer dockless
//! is refused, not written to.

use super::{JobError, Result};

/// (version, what it does, SQL). Append only; never edit a released entry.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "jobs, aliases, leases",
    "CREATE TABLE jobs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery TEXT NOT NULL UNIQUE,
        repository TEXT NOT NULL,
        clone_url TEXT NOT NULL,
        pr_number BIGINT NOT NULL,
        commit_sha TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        finished_ms BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        images JSONB NOT NULL DEFAULT '[]',
        unfinished BIGINT NOT NULL DEFAULT 0,
        lease_token BIGINT NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_ms BIGINT
    );
    CREATE INDEX jobs_status ON jobs (status, id);
    -- One live build per commit, whichever replica queued it.
    CREATE UNIQUE INDEX jobs_live_commit ON jobs (repository, commit_sha)
        WHERE status IN ('queued', 'running', 'succeeded');
    CREATE TABLE aliases (
        delivery TEXT PRIMARY KEY,
        job_id BIGINT NOT NULL REFERENCES jobs (id)
    );",
)];

/// Any number: it only has to be the same in every replica.
const MIGRATION_LOCK: i64 = 0x646f_636b_6c65_7373; // "dockless"

/// Brings the schema to the newest version; returns the versions applied.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<Vec<i32>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Quiet: "already exists, skipping" at every start is not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS dockless_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM dockless_migrations",
            &[],
        )
        .await?
        .get(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(JobError::Schema(format!(
            "the database's schema is version {current}, newer than this dockless knows \
             ({newest}); run the newer dockless, or point database_url at another database"
        )));
    }
    let mut applied = Vec::new();
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO dockless_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
