//! The PostgreSQL schema as numbered migrations, applied at start.
//!
//! Hand-written rather than with a migration crate (refinery, sqlx's
//! migrator): replicas start together, so the check and the migrations run
//! in one transaction under an advisory lock, and the whole thing is a
//! table of versions and a loop. A database migrated by a newer dockless
//! is refused, not written to.

use super::{JobError, Result};

/// (version, what it does, SQL). Append only; never edit a released entry.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
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
    ),
    (2, "enqueue in one round trip", ENQUEUE_FUNCTION),
    (3, "enqueue warm-up that writes nothing", ENQUEUE_WARMABLE),
];

/// `dockless_enqueue`: the whole of `JobStore::enqueue` in the database, so
/// a delivery costs one round trip and one commit. It sends no NOTIFY: a
/// transaction that notifies holds a lock that serializes every notifying
/// commit in the cluster through its WAL flush, which made concurrent
/// deliveries queue behind each other's fsync. Each statement of a
/// PL/pgSQL function sees what committed before it ran, so after an insert
/// that lost a race to another replica (a unique constraint: the delivery,
/// or the commit's live build) the next pass of the loop finds the winner.
const ENQUEUE_FUNCTION: &str = "
CREATE FUNCTION dockless_enqueue(
    p_delivery TEXT, p_repository TEXT, p_clone_url TEXT, p_pr_number BIGINT,
    p_commit TEXT, p_head_sha TEXT, OUT build_id BIGINT, OUT created BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    created := false;
    -- Each lost race means the winner's row is there to be found next pass.
    FOR pass IN 1..5 LOOP
        SELECT j.id INTO build_id FROM jobs j WHERE j.delivery = p_delivery
            UNION ALL SELECT a.job_id FROM aliases a WHERE a.delivery = p_delivery
            LIMIT 1;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT j.id INTO build_id FROM jobs j
            WHERE j.repository = p_repository AND j.commit_sha = p_commit
            AND j.status IN ('queued', 'running', 'succeeded');
        IF FOUND THEN
            INSERT INTO aliases (delivery, job_id) VALUES (p_delivery, build_id)
                ON CONFLICT DO NOTHING;
            IF FOUND THEN
                RETURN;
            END IF;
            CONTINUE;
        END IF;
        INSERT INTO jobs (delivery, repository, clone_url, pr_number, commit_sha,
                head_sha, status, created_ms)
            VALUES (p_delivery, p_repository, p_clone_url, p_pr_number, p_commit,
                p_head_sha, 'queued', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
            ON CONFLICT DO NOTHING
            RETURNING id INTO build_id;
        IF FOUND THEN
            created := true;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'delivery % lost 5 races in a row', p_delivery;
END
$$;";

/// Migration 3's `dockless_enqueue` (it restates migration 2's whole, as
/// migrations are history applied as written): the same, except that an empty
/// delivery id (never a real one: the webhook and `Pending::submit` refuse
/// it) runs every statement of a new delivery's path, so each is planned,
/// and writes nothing: the INSERT selects no row, so no build id is taken
/// either. A replica calls it on each pooled connection at start (see
/// `postgres::warm_up`), so a burst right after a start does not wait for
/// fresh backends to compile the function and plan its statements.
const ENQUEUE_WARMABLE: &str = "
CREATE OR REPLACE FUNCTION dockless_enqueue(
    p_delivery TEXT, p_repository TEXT, p_clone_url TEXT, p_pr_number BIGINT,
    p_commit TEXT, p_head_sha TEXT, OUT build_id BIGINT, OUT created BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    created := false;
    FOR pass IN 1..5 LOOP
        SELECT j.id INTO build_id FROM jobs j WHERE j.delivery = p_delivery
            UNION ALL SELECT a.job_id FROM aliases a WHERE a.delivery = p_delivery
            LIMIT 1;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT j.id INTO build_id FROM jobs j
            WHERE j.repository = p_repository AND j.commit_sha = p_commit
            AND j.status IN ('queued', 'running', 'succeeded');
        IF FOUND THEN
            INSERT INTO aliases (delivery, job_id) VALUES (p_delivery, build_id)
                ON CONFLICT DO NOTHING;
            IF FOUND THEN
                RETURN;
            END IF;
            CONTINUE;
        END IF;
        INSERT INTO jobs (delivery, repository, clone_url, pr_number, commit_sha,
                head_sha, status, created_ms)
            SELECT p_delivery, p_repository, p_clone_url, p_pr_number, p_commit,
                p_head_sha, 'queued', (extract(epoch FROM clock_timestamp()) * 1000)::bigint
            WHERE p_delivery <> ''
            ON CONFLICT DO NOTHING
            RETURNING id INTO build_id;
        IF FOUND THEN
            created := true;
            RETURN;
        END IF;
        IF p_delivery = '' THEN
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'delivery % lost 5 races in a row', p_delivery;
END
$$;";

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
