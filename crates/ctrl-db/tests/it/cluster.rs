use anyhow::Result;
use ctrl_core::id::IdKind;
use ctrl_db::Error;
use ctrl_db::cluster::{self, Heartbeat};
use ctrl_db::types::Backend;
use ctrl_testkit::test_database;

use crate::fixtures::{NOW, id};

#[tokio::test]
async fn regions_are_upserted_listed_and_toggled() -> Result<()> {
    let db = test_database().await?;
    let mut conn = db.pool.acquire().await?;
    let a = cluster::upsert_region(&mut conn, &id(IdKind::Region), "us-east-1", "aws", NOW).await?;
    let again =
        cluster::upsert_region(&mut conn, &id(IdKind::Region), "us-east-1", "aws", NOW + 5).await?;
    assert_eq!(a, again, "the same (name, platform) keeps its id");
    cluster::upsert_region(&mut conn, &id(IdKind::Region), "us-east-1", "gcp", NOW).await?;
    let names: Vec<_> = cluster::list_regions(&db.pool)
        .await?
        .into_iter()
        .map(|r| r.platform)
        .collect();
    assert_eq!(names, ["aws", "gcp"]);
    cluster::set_can_schedule(&db.pool, &a.id, false, NOW).await?;
    assert!(!cluster::get_region(&db.pool, &a.id).await?.can_schedule);
    assert!(matches!(
        cluster::set_can_schedule(&db.pool, "rgn_missing", true, NOW).await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}

#[tokio::test]
async fn heartbeats_register_and_refresh_one_cluster_per_region() -> Result<()> {
    let db = test_database().await?;
    let (cluster_ids, region_ids) = (
        [id(IdKind::Cluster), id(IdKind::Cluster)],
        [id(IdKind::Region), id(IdKind::Region)],
    );
    let hb = |cell: &'static str, at| {
        let n = usize::from(at != NOW);
        Heartbeat {
            new_cluster_id: &cluster_ids[n],
            new_region_id: &region_ids[n],
            region: "local",
            platform: "dev",
            cell_id: cell,
            backend: Backend::Docker,
            agent_version: if at == NOW { "0.1.0" } else { "0.2.0" },
        }
    };
    assert!(matches!(
        cluster::find_cluster(&db.pool, "dev", "local", "cell-1").await,
        Err(Error::NotFound("cluster"))
    ));
    let mut tx = db.pool.begin().await?;
    let first = cluster::heartbeat(&mut tx, &hb("cell-1", NOW), NOW).await?;
    tx.commit().await?;
    let mut tx = db.pool.begin().await?;
    let second = cluster::heartbeat(&mut tx, &hb("cell-1", NOW + 30_000), NOW + 30_000).await?;
    tx.commit().await?;
    assert_eq!(first.id, second.id);
    assert_eq!(second.last_heartbeat_at, NOW + 30_000);
    assert_eq!(second.agent_version, "0.2.0");
    assert_eq!(first.agent_version, "0.1.0");
    assert_eq!(second.backend, Backend::Docker);
    let found = cluster::find_cluster(&db.pool, "dev", "local", "cell-1").await?;
    assert_eq!(found, second);
    assert_eq!(
        cluster::get_region(&db.pool, &found.region_id)
            .await?
            .last_heartbeat_at,
        NOW + 30_000
    );
    Ok(())
}
