//! Deploy-from-source figures, on the real stack of the build tests (worker
//! process, restate-server, MariaDB, podman's Docker API, docker-registry,
//! s3s-fs).
//!
//! `cargo bench -p ctrl-worker --bench builds [-- ROUNDS]`
//!
//! - Packing: `ctrl_build::context::pack` of a directory with a 32 MiB file
//!   (what `ctrl deploy --context` does before uploading), MB/s.
//! - Upload: the packed context PUT to a presigned URL (the CLI's path),
//!   MB/s, against the same bytes through the S3 SDK's own PutObject in the
//!   same run (the baseline: what the store itself takes).
//! - Builds of `examples/hello` through the pipeline: cold (every layer
//!   built: a new file early in the context invalidates the cache) and warm
//!   (the same context again: every layer from the cache), measured from
//!   the deployment's start to its image being recorded, and the build's
//!   own time (its row's started → finished).
//! - Build → ready: image recorded → deployment ready. The harness reports
//!   the region's instances itself (an agent that answers at once), so this
//!   is the pipeline's own overhead after the build.
//!
//! Figures are printed, never asserted: these machines are shared.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../tests/it/build_stack.rs"]
#[allow(dead_code)]
mod build_stack;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use build_stack::BuildStack;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::{build, deployment};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let s = BuildStack::start(4, "").await?;

    // Packing and uploading a context with a large incompressible file.
    let dir = tempfile::tempdir()?;
    copy_dir(&hello(), dir.path())?;
    let mut blob = vec![0u8; 32 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for b in &mut blob {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = (state >> 24) as u8;
    }
    std::fs::write(dir.path().join("public/blob.bin"), &blob)?;
    let (mut pack, mut presigned, mut sdk) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0usize;
    for n in 0..rounds {
        let started = Instant::now();
        let packed = ctrl_build::context::pack(dir.path(), "")?;
        pack.push(mb_per_s(packed.bytes as usize, started.elapsed()));
        size = packed.gz.len();
        let upload = s
            .store
            .presign_upload(
                &s.h.workspace,
                &s.h.app,
                &format!("bench-{n}"),
                size as u64,
                SystemTime::now(),
            )
            .await?;
        let started = Instant::now();
        let status = ctrl_testkit::http_client()
            .put(&upload.url)
            .header("content-type", ctrl_build::store::CONTENT_TYPE)
            .timeout(Duration::from_secs(300))
            .body(packed.gz.clone())
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("upload answered {status}");
        }
        presigned.push(mb_per_s(size, started.elapsed()));
        let started = Instant::now();
        s._s3
            .client()
            .put_object()
            .bucket("contexts")
            .key(format!("baseline-{n}"))
            .body(packed.gz.into())
            .send()
            .await?;
        sdk.push(mb_per_s(size, started.elapsed()));
    }
    println!(
        "context of {:.1} MiB compressed ({} rounds)",
        size as f64 / f64::from(1 << 20),
        rounds
    );
    println!("  pack                   {}", mbps(&pack));
    println!(
        "  upload, presigned PUT  {}   baseline SDK PutObject {}   ratio {:.2}",
        mbps(&presigned),
        mbps(&sdk),
        median(&presigned) / median(&sdk)
    );

    // Cold and warm builds of examples/hello, then to ready.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let (mut cold_build, mut warm_build, mut to_ready) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..rounds {
        let dir = tempfile::tempdir()?;
        copy_dir(&hello(), dir.path())?;
        // An early COPY of new content: nothing below it is cached.
        let dockerfile = std::fs::read_to_string(dir.path().join("Dockerfile"))?
            .replace("FROM busybox\n", "FROM busybox\nCOPY bust.txt /bust.txt\n");
        std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
        std::fs::write(
            dir.path().join("bust.txt"),
            format!("{n} {:?}", SystemTime::now()),
        )?;
        for (times, builds) in [(&mut cold, &mut cold_build), (&mut warm, &mut warm_build)] {
            let key = s.upload(dir.path()).await?;
            let id = s.context_deployment(&s.h.preview, &key).await?;
            let started = Instant::now();
            s.h.deploy(&id).await?;
            let b = wait_built(&s, &id).await?;
            let built_at = Instant::now();
            times.push(started.elapsed());
            builds.push(Duration::from_millis(u64::try_from(
                b.finished_at.unwrap_or_default() - b.started_at.unwrap_or_default(),
            )?));
            s.h.wait_topology(&id, DesiredState::Running).await?;
            s.h.report_running(&id, 1).await?;
            s.h.wait_status(&id, DeploymentStatus::Ready).await?;
            to_ready.push(built_at.elapsed());
        }
    }
    println!("examples/hello through the pipeline ({rounds} rounds each):");
    println!(
        "  cold: start → image recorded {}   (build itself {})",
        secs(&cold),
        secs(&cold_build)
    );
    println!(
        "  warm: start → image recorded {}   (build itself {})   warm/cold {:.2}",
        secs(&warm),
        secs(&warm_build),
        median_d(&warm) / median_d(&cold)
    );
    println!(
        "  image recorded → ready (agent answering at once) {}",
        secs(&to_ready)
    );
    Ok(())
}

async fn wait_built(s: &BuildStack, id: &str) -> Result<build::Build> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(b) = build::for_deployment(&s.h.db.pool, id).await?
            && b.finished_at.is_some()
        {
            let d = deployment::get(&s.h.db.pool, id).await?;
            if b.status != ctrl_db::types::BuildStatus::Succeeded {
                bail!("build failed: {:?}", d.error_message);
            }
            return Ok(b);
        }
        if Instant::now() > deadline {
            bail!("no build within 300 s:\n{}", s.h.worker_log(30));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hello() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).context("copy")?;
        }
    }
    Ok(())
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / f64::from(1 << 20) / took.as_secs_f64().max(1e-9)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_d(v: &[Duration]) -> f64 {
    median(&v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>())
}

fn mbps(v: &[f64]) -> String {
    format!("p50 {:.0} MB/s", median(v))
}

fn secs(v: &[Duration]) -> String {
    let mut s: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} s (min {:.2}, max {:.2})",
        s.get(s.len() / 2).copied().unwrap_or_default(),
        s.first().copied().unwrap_or_default(),
        s.last().copied().unwrap_or_default()
    )
}
