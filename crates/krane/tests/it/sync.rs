//! The sync protocol between krane's stream and cluster-sync on a real
//! MariaDB: registration, point lookups, reports, resync, paging, and
//! ordering under concurrent writers across restarts of both sides.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ctrl_cluster_sync::Settings;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_proto::ctrl::v1 as pb;
use krane::metrics::Metrics;
use krane::stream::{StreamSettings, StreamState};
use rand::Rng;

use crate::support::{Recorder, Seed, SyncServer, eventually};

fn fast() -> Settings {
    let mut s = Settings::default();
    s.feed.poll_interval = Duration::from_millis(20);
    s.keepalive = Duration::from_millis(500);
    s
}

/// Runs krane's stream (heartbeat + snapshot + watch) into a recorder.
async fn follow(
    server: &SyncServer,
    cell: &str,
) -> Result<(
    Arc<Recorder>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
)> {
    let control = server.control(cell).await?;
    let recorder = Arc::new(Recorder::default());
    let state = Arc::new(StreamState::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let reconnect = (Duration::from_millis(50), Duration::from_millis(150));
    let hb = krane::stream::heartbeat_loop(
        control.clone(),
        pb::AgentBackend::Docker,
        state.clone(),
        reconnect,
        stop.clone(),
    );
    let stream = krane::stream::follow(
        control,
        recorder.clone(),
        StreamSettings {
            full_sync: Duration::from_secs(600),
            reconnect,
        },
        state,
        Metrics::default(),
        stop,
    );
    let task = tokio::spawn(async move {
        tokio::join!(hb, stream);
    });
    Ok((recorder, stop_tx, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_lookups_reports_and_resync() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    // Readiness notifications go nowhere here (the deployment is not waiting).
    let server = SyncServer::start(&db.pool, "http://127.0.0.1:9", fast()).await?;
    let control = server.control("local-1").await?;

    // Wrong token: unauthenticated, nothing registered.
    let intruder = krane::control::Control::new(
        &server.url(),
        "not-the-token-at-all",
        control.key().clone(),
        Duration::from_secs(5),
    )?;
    let err = intruder
        .heartbeat(pb::AgentBackend::Docker)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Unknown cluster: not_found, telling the agent what to do.
    let err = control.snapshot().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("Heartbeat"), "{}", err.message());
    // A bad key is named.
    let bad = server.control("Cell_1").await?;
    let err = bad.heartbeat(pb::AgentBackend::Docker).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("cluster.cell_id"),
        "{}",
        err.message()
    );

    let err = control.snapshot().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "still unregistered");

    let hb = control.heartbeat(pb::AgentBackend::Docker).await?;
    assert_eq!(hb.region_id, seed.region, "joins the existing region");
    assert_eq!(hb.heartbeat_interval_ms, 30_000);

    // Point lookups: unknown → None (delete it); running → apply; stopped → delete.
    let d = seed.deployment(&db.pool).await?;
    assert!(control.desired(&d).await?.is_none());
    seed.set(&db.pool, &d, true, 2).await?;
    let Some(pb::DeploymentState {
        state: Some(pb::deployment_state::State::Apply(apply)),
        ..
    }) = control.desired(&d).await?
    else {
        panic!("expected apply");
    };
    assert_eq!(apply.image, "localhost/demo:1");
    assert_eq!(apply.autoscaling.as_ref().map(|a| a.min_replicas), Some(2));
    assert_eq!(apply.region, "local");

    // Reports replace the region's instance set.
    let report = |names: &[(&str, pb::InstanceStatus)]| {
        pb::report_deployment_status_request::Change::Update(pb::DeploymentInstances {
            deployment_id: d.clone(),
            k8s_name: apply.k8s_name.clone(),
            instances: names
                .iter()
                .map(|(n, s)| pb::Instance {
                    name: (*n).into(),
                    address: "127.0.0.1:1".into(),
                    cpu_millicores: 250,
                    memory_mib: 256,
                    status: *s as i32,
                })
                .collect(),
            ..Default::default()
        })
    };
    control
        .report(report(&[
            ("a-0", pb::InstanceStatus::Running),
            ("a-1", pb::InstanceStatus::Pending),
        ]))
        .await?;
    control
        .report(report(&[
            ("a-0", pb::InstanceStatus::Running),
            ("a-2", pb::InstanceStatus::Failed),
        ]))
        .await?;
    let rows = ctrl_db::instance::list_by_deployment(&db.pool, &d).await?;
    let names: Vec<(&str, ctrl_db::types::InstanceStatus)> =
        rows.iter().map(|r| (r.name.as_str(), r.status)).collect();
    assert_eq!(
        names,
        [
            ("a-0", ctrl_db::types::InstanceStatus::Running),
            ("a-2", ctrl_db::types::InstanceStatus::Failed)
        ]
    );
    // An exit lands on the instance row.
    control
        .events(vec![pb::InstanceEvent {
            deployment_id: d.clone(),
            instance_name: "a-2".into(),
            container_id: "c".into(),
            restart_count: 1,
            time: 5,
            state: Some(pb::instance_event::State::Terminated(
                pb::InstanceTerminated {
                    exit_code: 137,
                    signal: 0,
                    reason: "OOMKilled".into(),
                    message: String::new(),
                    oom_killed: true,
                    finished_at: 5,
                },
            )),
            attributes: Default::default(),
        }])
        .await?;
    let a2 = ctrl_db::instance::list_by_deployment(&db.pool, &d)
        .await?
        .into_iter()
        .find(|r| r.name == "a-2")
        .unwrap();
    assert_eq!(
        (a2.restart_count, a2.last_exit_code, a2.oom_killed),
        (1, Some(137), true)
    );

    // A ready deployment whose desired state is stopped becomes `stopped`
    // once its workload is reported removed.
    ctrl_db::deployment::compare_and_set_status(
        &db.pool,
        &d,
        DeploymentStatus::Pending,
        DeploymentStatus::Ready,
        2,
    )
    .await?;
    ctrl_db::deployment::set_desired_state(&db.pool, &d, DesiredState::Stopped, 3).await?;
    control
        .report(pb::report_deployment_status_request::Change::Removed(
            pb::DeploymentRemoved {
                deployment_id: d.clone(),
                k8s_name: apply.k8s_name.clone(),
            },
        ))
        .await?;
    assert_eq!(
        ctrl_db::deployment::get(&db.pool, &d).await?.status,
        DeploymentStatus::Stopped
    );
    assert!(
        ctrl_db::instance::list_by_deployment(&db.pool, &d)
            .await?
            .is_empty()
    );

    // A cursor from the future (another database) asks for a snapshot.
    let mut watch = control.watch(1_000_000).await?;
    let first = watch.message().await?.expect("a message");
    assert!(
        matches!(
            first.event,
            Some(pb::watch_response::Event::ResyncRequired(_))
        ),
        "{first:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_page_through_every_running_deployment() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let settings = Settings {
        page_size: 7,
        ..fast()
    };
    let server = SyncServer::start(&db.pool, "http://127.0.0.1:9", settings).await?;
    let mut running = Vec::new();
    for i in 0..30 {
        let d = seed.deployment(&db.pool).await?;
        seed.set(&db.pool, &d, true, 1).await?;
        if i % 5 == 0 {
            seed.set(&db.pool, &d, false, 1).await?;
        } else {
            running.push(d);
        }
    }
    let control = server.control("local-1").await?;
    control.heartbeat(pb::AgentBackend::Docker).await?;
    let mut stream = control.snapshot().await?;
    let mut seen = Vec::new();
    let mut complete = None;
    while let Some(msg) = stream.message().await? {
        match msg.event {
            Some(pb::sync_desired_state_response::Event::Deployment(s)) => {
                seen.push(krane::stream::deployment_id(&s).unwrap().to_owned());
            }
            Some(pb::sync_desired_state_response::Event::Complete(c)) => complete = Some(c),
            None => {}
        }
    }
    seen.sort();
    running.sort();
    assert_eq!(seen, running, "exactly the running deployments, each once");
    let complete = complete.expect("the snapshot ends with its version");
    assert_eq!(complete.deployments, 24);
    assert_eq!(
        complete.version,
        ctrl_db::topology::current_version(&db.pool, &seed.region).await?
    );

    // The operations listener shows the snapshot (and health), never the
    // agents' services.
    let sync = server.sync.clone().expect("serving");
    let ops = ctrl_cluster_sync::server::ops_router(&sync, db.pool.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let serving = tokio::spawn(async move {
        let _ = axum::serve(ctrl_runtime::net::nodelay(listener), ops).await;
    });
    let client = ctrl_testkit::http_client();
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("ctrl_cluster_sync_snapshot_duration_seconds_count{kind=\"krane\"} 1"),
        "{text}"
    );
    let ready = client.get(format!("{url}/health/ready")).send().await?;
    assert_eq!(ready.status(), 200);
    let agents = client
        .post(format!("{url}/ctrl.v1.ClusterService/Heartbeat"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(agents.status(), 404);
    serving.abort();
    Ok(())
}

/// 1,000 changes of 50 deployments from 5 concurrent writers reach the
/// agent in version order and converge, while cluster-sync restarts once
/// and the agent is killed and replaced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_reach_agents_in_order_across_restarts() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Arc::new(Seed::new(&db.pool).await?);
    let mut server = SyncServer::start(&db.pool, "http://127.0.0.1:9", fast()).await?;
    let mut deployments = Vec::new();
    for _ in 0..50 {
        deployments.push(seed.deployment(&db.pool).await?);
    }
    let deployments = Arc::new(deployments);

    // 5 writers × 100 changes, then the same again.
    let write = |n: usize| {
        let (db, seed, deployments) = (db.pool.clone(), seed.clone(), deployments.clone());
        tokio::spawn(async move {
            for _ in 0..n {
                let (d, running, min) = {
                    let mut rng = rand::rng();
                    let d = deployments[rng.random_range(0..deployments.len())].clone();
                    (d, rng.random_bool(0.7), rng.random_range(1..4))
                };
                seed.set(&db, &d, running, min).await?;
            }
            anyhow::Ok(())
        })
    };
    let truth = |db: sqlx::MySqlPool, deployments: Arc<Vec<String>>| async move {
        let mut out = HashMap::new();
        for d in deployments.iter() {
            for t in ctrl_db::topology::list_by_deployment(&db, d).await? {
                out.insert(
                    d.clone(),
                    (t.version, t.desired_status == DesiredState::Running),
                );
            }
        }
        anyhow::Ok(out)
    };

    // Agent A follows from the start; cluster-sync restarts mid-way.
    let (a, stop_a, task_a) = follow(&server, "local-1").await?;
    let writers: Vec<_> = (0..5).map(|_| write(100)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await?;
    for w in writers {
        w.await??;
    }
    let expected = truth(db.pool.clone(), deployments.clone()).await?;
    eventually(Duration::from_secs(30), "agent A to converge", || {
        let a = a.clone();
        let expected = expected.clone();
        async move { Ok(a.inner.lock().unwrap().latest == expected) }
    })
    .await?;
    {
        let r = a.inner.lock().unwrap();
        let versions: Vec<u64> = r.watched.iter().map(|(_, v, _)| *v).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "versions out of order"
        );
        assert!(
            versions.len() >= 50,
            "changes arrived through the watch: {}",
            versions.len()
        );
    }
    // Agent A dies; 500 more changes; agent B starts while they are written.
    let _ = stop_a.send(true);
    task_a.abort();
    let writers: Vec<_> = (0..5).map(|_| write(100)).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (b, _stop_b, _task_b) = follow(&server, "local-1").await?;
    for w in writers {
        w.await??;
    }
    let expected = truth(db.pool.clone(), deployments.clone()).await?;
    // B started from a snapshot (running deployments only) and then watched.
    eventually(Duration::from_secs(30), "agent B to converge", || {
        let b = b.clone();
        let expected = expected.clone();
        async move {
            let r = b.inner.lock().unwrap();
            let running: HashMap<&String, u64> = r
                .latest
                .iter()
                .filter(|(_, (_, run))| *run)
                .map(|(d, (v, _))| (d, *v))
                .collect();
            let want: HashMap<&String, u64> = expected
                .iter()
                .filter(|(_, (_, run))| *run)
                .map(|(d, (v, _))| (d, *v))
                .collect();
            Ok(running == want)
        }
    })
    .await?;
    let r = b.inner.lock().unwrap();
    assert_eq!(r.snapshots, 1);
    let versions: Vec<u64> = r.watched.iter().map(|(_, v, _)| *v).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions out of order"
    );
    drop(r);
    assert_eq!(
        server.sync.as_ref().unwrap().feeds().active(),
        1,
        "one feed for the region"
    );
    Ok(())
}
