use anyhow::Result;
use ctrl_testkit::test_database;

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_as_a_no_op() -> Result<()> {
    let db = test_database().await?; // applied once here
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&db.pool)
    .await?;
    assert!(tables >= 20, "only {tables} tables");
    ctrl_db::migrate(&mut *db.pool.acquire().await?).await?; // and again
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(applied as usize, ctrl_db::MIGRATOR.iter().count());
    Ok(())
}

#[tokio::test]
async fn connect_opens_a_working_pool_and_reports_a_bad_url() -> Result<()> {
    let db = test_database().await?;
    let pool = ctrl_db::connect(&db.url, 2).await?;
    ctrl_db::ping(&pool).await?;
    let bad = ctrl_db::connect("mysql://ctrl:wrong@127.0.0.1:1/nope", 1).await;
    assert!(bad.is_err());
    Ok(())
}

/// Two migration runs at once (the chart's Job retried while the first
/// still runs, or two operators) both succeed and apply each migration
/// once: [`ctrl_db::migrate`] holds a named lock of the database. (With
/// `MIGRATOR.run` alone the second run fails on a duplicate migration row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migration_runs_apply_each_migration_once() -> Result<()> {
    let db = test_database().await?;
    let fresh = format!("{}_fresh", db.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{fresh}`")))
        .execute(&db.pool)
        .await?;
    let url = db.url.replacen(&db.name, &fresh, 1);
    let (a, b) = (
        ctrl_db::connect(&url, 2).await?,
        ctrl_db::connect(&url, 2).await?,
    );
    let (mut ca, mut cb) = (a.acquire().await?, b.acquire().await?);
    let (ra, rb) = tokio::join!(ctrl_db::migrate(&mut ca), ctrl_db::migrate(&mut cb));
    ra?;
    rb?;
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations")
        .fetch_all(&a)
        .await?;
    assert_eq!(applied.len(), ctrl_db::MIGRATOR.iter().count());
    Ok(())
}
