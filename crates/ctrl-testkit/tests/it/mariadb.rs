use anyhow::Result;
use ctrl_testkit::test_database;
use sqlx::Row;

#[tokio::test]
async fn each_test_database_is_fresh_migrated_and_isolated() -> Result<()> {
    let a = test_database().await?;
    let b = test_database().await?;
    assert_ne!(a.name, b.name);

    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&a.pool)
        .await?;
    assert!(version.contains("MariaDB"), "{version}");

    // Migrations ran (sqlx records them in _sqlx_migrations) ...
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&a.pool)
        .await?;
    assert_eq!(applied, ctrl_db::MIGRATOR.iter().count() as i64);

    // ... the server speaks utf8mb4 with a binary collation, like production ...
    let row = sqlx::query("SELECT @@character_set_server, @@collation_server")
        .fetch_one(&a.pool)
        .await?;
    assert_eq!(row.get::<String, _>(0), "utf8mb4");
    assert_eq!(row.get::<String, _>(1), "utf8mb4_bin");

    // ... and what one database holds, the other does not see.
    sqlx::query("CREATE TABLE probe (id BIGINT PRIMARY KEY)")
        .execute(&a.pool)
        .await?;
    sqlx::query("INSERT INTO probe VALUES (42)")
        .execute(&a.pool)
        .await?;
    let seen: i64 = sqlx::query_scalar("SELECT id FROM probe")
        .fetch_one(&a.pool)
        .await?;
    assert_eq!(seen, 42);
    let missing = sqlx::query("SELECT id FROM probe").fetch_one(&b.pool).await;
    assert!(
        missing.is_err(),
        "database {} must not see {}'s tables",
        b.name,
        a.name
    );
    Ok(())
}
