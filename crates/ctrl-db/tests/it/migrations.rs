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
    ctrl_db::MIGRATOR.run(&db.pool).await?; // and again
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
