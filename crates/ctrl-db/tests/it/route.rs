use anyhow::Result;
use ctrl_core::domains::Sticky;
use ctrl_core::id::IdKind;
use ctrl_db::Error;
use ctrl_db::route::{self, NewRoute};
use ctrl_testkit::test_database;

use crate::fixtures::{NOW, deploy, id, tree};

#[tokio::test]
async fn routes_are_unique_by_hostname_listed_and_reassigned() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let a = deploy(&db.pool, &t, &t.production, None).await?;
    let b = deploy(&db.pool, &t, &t.production, None).await?;
    let mut ids = Vec::new();
    for (fqdn, sticky) in [
        ("shop-production-acme.ctrl.test", Sticky::Environment),
        ("shop-acme.ctrl.test", Sticky::Live),
        ("shop-d-x-acme.ctrl.test", Sticky::Deployment),
    ] {
        let rid = id(IdKind::FrontlineRoute);
        let r = NewRoute {
            id: &rid,
            workspace_id: &t.workspace,
            project_id: &t.project,
            app_id: &t.app,
            environment_id: &t.production,
            deployment_id: &a.id,
            fqdn,
            sticky,
        };
        route::insert(&db.pool, &r, NOW).await?;
        ids.push(rid);
    }
    let clash = NewRoute {
        id: &id(IdKind::FrontlineRoute),
        workspace_id: &t.workspace,
        project_id: &t.project,
        app_id: &t.app,
        environment_id: &t.preview,
        deployment_id: &b.id,
        fqdn: "shop-acme.ctrl.test",
        sticky: Sticky::Branch,
    };
    assert!(
        matches!(route::insert(&db.pool, &clash, NOW).await, Err(Error::AlreadyExists { ref key }) if key == "frontline_routes_fqdn")
    );

    let found = route::find_by_fqdn(&db.pool, "shop-acme.ctrl.test")
        .await?
        .expect("exists");
    assert_eq!(
        (found.deployment_id.as_str(), found.sticky),
        (a.id.as_str(), Sticky::Live)
    );
    assert_eq!(route::find_by_fqdn(&db.pool, "nope.ctrl.test").await?, None);

    let movable = route::list_by_environment_sticky(
        &db.pool,
        &t.production,
        &[Sticky::Environment, Sticky::Live],
    )
    .await?;
    assert_eq!(
        movable.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    assert!(
        route::list_by_environment_sticky(&db.pool, &t.production, &[])
            .await?
            .is_empty()
    );

    let mut tx = db.pool.begin().await?;
    let previous =
        route::reassign(&mut tx, &[ids[0].clone(), ids[1].clone()], &b.id, NOW + 1).await?;
    tx.commit().await?;
    assert_eq!(
        previous,
        [
            (ids[0].clone(), a.id.clone()),
            (ids[1].clone(), a.id.clone())
        ]
    );
    assert_eq!(route::list_by_deployment(&db.pool, &b.id).await?.len(), 2);
    assert_eq!(
        route::list_by_deployment(&db.pool, &a.id).await?.len(),
        1,
        "the deployment route never moves"
    );

    let mut tx = db.pool.begin().await?;
    assert!(matches!(
        route::reassign(&mut tx, &["flr_missing".into()], &b.id, NOW).await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}
