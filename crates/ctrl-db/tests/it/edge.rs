use std::collections::BTreeSet;

use anyhow::Result;
use ctrl_core::domains::Sticky;
use ctrl_core::id::IdKind;
use ctrl_core::status::DesiredState;
use ctrl_db::certificate::{self, NewCertificate};
use ctrl_db::edge::{self, Kind};
use ctrl_db::instance::{self, ReportedInstance};
use ctrl_db::route::{self, NewRoute};
use ctrl_db::types::InstanceStatus;
use ctrl_db::{deletion, deployment};
use ctrl_testkit::test_database;
use sqlx::MySqlPool;

use crate::fixtures::{NOW, Tree, deploy, id, tree};

async fn changes_after(pool: &MySqlPool, cursor: u64) -> Result<Vec<(Kind, String)>> {
    Ok(edge::list_changes(pool, cursor, 1000)
        .await?
        .into_iter()
        .map(|c| (c.kind, c.key))
        .collect())
}

async fn add_route(
    pool: &MySqlPool,
    t: &Tree,
    d: &str,
    fqdn: &str,
    sticky: Sticky,
) -> Result<String> {
    let rid = id(IdKind::FrontlineRoute);
    let r = NewRoute {
        id: &rid,
        workspace_id: &t.workspace,
        project_id: &t.project,
        app_id: &t.app,
        environment_id: &t.production,
        deployment_id: d,
        fqdn,
        sticky,
    };
    route::insert(pool, &r, NOW).await?;
    Ok(rid)
}

fn running(name: &str, address: &str) -> ReportedInstance {
    ReportedInstance {
        new_id: id(IdKind::Instance),
        name: name.into(),
        address: address.into(),
        cpu_millicores: 250,
        memory_mib: 256,
        status: InstanceStatus::Running,
    }
}

/// Every write the edge routes by lands in the feed with the key it touched,
/// and nothing else does; the snapshot agrees with the rows at its version.
#[tokio::test]
async fn every_edge_write_is_in_the_feed() -> Result<()> {
    let db = test_database().await?;
    let pool = &db.pool;
    let t = tree(pool).await?;
    let a = deploy(pool, &t, &t.production, None).await?;
    let b = deploy(pool, &t, &t.production, None).await?;
    let start = edge::current_version(pool).await?;

    let live = add_route(pool, &t, &a.id, "web-acme.ctrl.test", Sticky::Live).await?;
    add_route(
        pool,
        &t,
        &a.id,
        "web-d-a-acme.ctrl.test",
        Sticky::Deployment,
    )
    .await?;
    assert_eq!(
        changes_after(pool, start).await?,
        [
            (Kind::Host, "web-acme.ctrl.test".into()),
            (Kind::Host, "web-d-a-acme.ctrl.test".into())
        ]
    );

    // Instances: a new one is a change, the same report again is not.
    let cursor = edge::current_version(pool).await?;
    for _ in 0..2 {
        let mut tx = pool.begin().await?;
        instance::replace_for_deployment(
            &mut tx,
            &t.workspace,
            &a.id,
            &t.region,
            &[running("c1", "10.0.0.1:80")],
            NOW,
        )
        .await?;
        tx.commit().await?;
    }
    assert_eq!(
        changes_after(pool, cursor).await?,
        [(Kind::Deployment, a.id.clone())]
    );

    // A route move, a desired-state change, a certificate.
    let cursor = edge::current_version(pool).await?;
    let mut tx = pool.begin().await?;
    route::reassign(&mut tx, std::slice::from_ref(&live), &b.id, NOW).await?;
    tx.commit().await?;
    deployment::set_desired_state(pool, &b.id, DesiredState::Stopped, NOW).await?;
    let cert = NewCertificate {
        new_id: &id(IdKind::Certificate),
        workspace_id: &t.workspace,
        hostname: "*.ctrl.test",
        certificate: "-----BEGIN CERTIFICATE-----",
        encrypted_private_key: b"sealed",
        not_after: NOW + 1000,
    };
    certificate::upsert(pool, &cert, NOW).await?;
    assert_eq!(
        changes_after(pool, cursor).await?,
        [
            (Kind::Host, "web-acme.ctrl.test".into()),
            (Kind::Deployment, b.id.clone()),
            (Kind::Certificate, "*.ctrl.test".into())
        ]
    );

    let mut conn = pool.acquire().await?;
    let snap = edge::snapshot(&mut conn).await?;
    assert_eq!(snap.version, edge::current_version(pool).await?);
    let hosts: BTreeSet<_> = snap
        .hosts
        .iter()
        .map(|h| (h.fqdn.as_str(), h.deployment_id.as_str()))
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from([
            ("web-acme.ctrl.test", b.id.as_str()),
            ("web-d-a-acme.ctrl.test", a.id.as_str())
        ])
    );
    let deployments: BTreeSet<_> = snap
        .deployments
        .iter()
        .map(|d| (d.id.as_str(), d.desired_state.as_str(), d.is_production))
        .collect();
    assert_eq!(
        deployments,
        BTreeSet::from([
            (a.id.as_str(), "running", true),
            (b.id.as_str(), "stopped", true)
        ])
    );
    assert_eq!(
        snap.instances
            .iter()
            .map(|i| (
                i.deployment_id.as_str(),
                i.address.as_str(),
                i.region.as_str()
            ))
            .collect::<Vec<_>>(),
        [(a.id.as_str(), "10.0.0.1:80", "local")]
    );
    assert_eq!(snap.certificates.len(), 1);

    // Removing a deployment names its hosts and itself.
    let cursor = edge::current_version(pool).await?;
    let mut tx = pool.begin().await?;
    deletion::remove_deployment(&mut tx, &a.id, NOW).await?;
    tx.commit().await?;
    assert_eq!(
        changes_after(pool, cursor).await?,
        [
            (Kind::Host, "web-d-a-acme.ctrl.test".into()),
            (Kind::Deployment, a.id.clone())
        ]
    );
    Ok(())
}

/// Concurrent writers: a reader polling `version > cursor` sees every
/// version exactly once and in order, never skipping one that commits late.
#[tokio::test]
async fn concurrent_writers_never_make_a_reader_skip() -> Result<()> {
    let db = test_database().await?;
    let pool = db.pool.clone();
    let t = tree(&pool).await?;
    let d = deploy(&pool, &t, &t.production, None).await?;
    let start = edge::current_version(&pool).await?;
    const WRITERS: usize = 6;
    const EACH: usize = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, t, d) = (pool.clone(), t.clone(), d.id.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                // Hold the transaction open a little after recording, so
                // commits interleave with other writers' records.
                let mut tx = pool.begin().await?;
                let r = id(IdKind::FrontlineRoute);
                let fqdn = format!("w{w}-{i}.ctrl.test");
                let new = NewRoute {
                    id: &r,
                    workspace_id: &t.workspace,
                    project_id: &t.project,
                    app_id: &t.app,
                    environment_id: &t.production,
                    deployment_id: &d,
                    fqdn: &fqdn,
                    sticky: Sticky::None,
                };
                route::insert(&mut *tx, &new, NOW).await?;
                if i % 3 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    let mut cursor = start;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen < WRITERS * EACH {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader saw only {seen} changes"
        );
        for c in edge::list_changes(&pool, cursor, 50).await? {
            assert_eq!(c.version, cursor + 1, "a version was skipped or repeated");
            cursor = c.version;
            seen += 1;
        }
    }
    for w in writers {
        w.await??;
    }
    Ok(())
}

#[tokio::test]
async fn pruned_changes_send_readers_to_a_snapshot() -> Result<()> {
    let db = test_database().await?;
    let pool = &db.pool;
    let t = tree(pool).await?;
    let d = deploy(pool, &t, &t.production, None).await?;
    for i in 0..5 {
        add_route(pool, &t, &d.id, &format!("h{i}.ctrl.test"), Sticky::None).await?;
    }
    let current = edge::current_version(pool).await?;
    assert!(edge::can_resume(pool, 0).await?);
    assert!(edge::can_resume(pool, current).await?);
    assert!(
        !edge::can_resume(pool, current + 1).await?,
        "a cursor from the future"
    );
    // Keep the newest two.
    assert_eq!(edge::prune(pool, NOW + 1, 2).await?, current - 2);
    assert!(!edge::can_resume(pool, 0).await?);
    assert!(!edge::can_resume(pool, current - 3).await?);
    assert!(edge::can_resume(pool, current - 2).await?);
    assert_eq!(edge::list_changes(pool, current - 2, 10).await?.len(), 2);
    Ok(())
}
