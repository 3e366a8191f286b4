//! A real database, cluster-sync in process (restartable on its port),
//! frontline in process on loopback ports, backends as in-process HTTP
//! servers, and clients for HTTP/1.1, HTTP/2 and TLS with a test CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use ctrl_cluster_sync::service::{ClusterSync, Settings};
use ctrl_core::domains::Sticky;
use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::DesiredState;
use ctrl_db::deployment::NewDeployment;
use ctrl_db::instance::ReportedInstance;
use ctrl_db::settings::RuntimeSettings;
use ctrl_db::tenancy::{NewApp, NewEnvironment};
use ctrl_db::types::{EnvironmentKind, InstanceStatus, SourceKind, TriggerKind, UpstreamProtocol};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sqlx::MySqlPool;
use tokio::net::TcpListener;

/// frontline's credential for region dev/`region` (registered by [`Sync`]).
pub(crate) fn edge_token(region: &str) -> String {
    format!("ctrl_agent_test_edge_{region}_0123456789abcdef")
}

/// The regions the tests run edges in.
const EDGE_REGIONS: [&str; 2] = ["local", "other"];
pub(crate) const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub(crate) const APEX: &str = "edge.test";

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Waits until `f` holds, polling every 10 ms, for at most `timeout`.
pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Tenancy, a region, and helpers that write what the worker and
/// cluster-sync would write.
pub(crate) struct Seed {
    pub(crate) db: MySqlPool,
    pub(crate) workspace: String,
    pub(crate) project: String,
    pub(crate) app: String,
    pub(crate) production: String,
    pub(crate) preview: String,
    pub(crate) region: String,
}

impl Seed {
    pub(crate) async fn new(db: &MySqlPool) -> Result<Self> {
        let mut rng = rand::rng();
        let s = Self {
            db: db.clone(),
            workspace: generate(IdKind::Workspace, &mut rng),
            project: generate(IdKind::Project, &mut rng),
            app: generate(IdKind::App, &mut rng),
            production: generate(IdKind::Environment, &mut rng),
            preview: generate(IdKind::Environment, &mut rng),
            region: String::new(),
        };
        ctrl_db::tenancy::insert_workspace(db, &s.workspace, "Acme", "acme", 1).await?;
        ctrl_db::tenancy::insert_project(db, &s.project, &s.workspace, "Shop", "shop", 1).await?;
        let app = NewApp {
            id: &s.app,
            workspace_id: &s.workspace,
            project_id: &s.project,
            name: "Web",
            slug: "web",
            default_branch: "main",
        };
        ctrl_db::tenancy::insert_app(db, &app, 1).await?;
        for (id, slug, kind) in [
            (&s.production, "production", EnvironmentKind::Production),
            (&s.preview, "preview", EnvironmentKind::Preview),
        ] {
            let e = NewEnvironment {
                id,
                workspace_id: &s.workspace,
                project_id: &s.project,
                app_id: &s.app,
                slug,
                kind,
                description: "",
            };
            ctrl_db::tenancy::insert_environment(db, &e, 1).await?;
        }
        let mut conn = db.acquire().await?;
        let region = ctrl_db::cluster::upsert_region(
            &mut conn,
            &generate(IdKind::Region, &mut rng),
            "local",
            "dev",
            1,
        )
        .await?;
        Ok(Self {
            region: region.id,
            ..s
        })
    }

    /// A deployment row in `environment`, `ready`.
    pub(crate) async fn deployment(
        &self,
        environment: &str,
        protocol: UpstreamProtocol,
    ) -> Result<String> {
        let id = generate(IdKind::Deployment, &mut rand::rng());
        let d = NewDeployment {
            id: id.clone(),
            k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
            workspace_id: self.workspace.clone(),
            project_id: self.project.clone(),
            app_id: self.app.clone(),
            environment_id: environment.to_owned(),
            source_kind: SourceKind::Image,
            image: Some("localhost/demo:1".into()),
            build: None,
            git_repository: None,
            git_commit_sha: None,
            git_branch: None,
            git_commit_message: None,
            git_commit_author_handle: None,
            git_commit_author_avatar_url: None,
            git_commit_timestamp: None,
            fork_repository: None,
            git_pr_number: None,
            runtime: RuntimeSettings {
                upstream_protocol: protocol,
                ..RuntimeSettings::default()
            },
            encrypted_environment: Vec::new(),
            trigger_kind: TriggerKind::Api,
            trigger_reason: None,
            actor_id: None,
            actor_name: None,
            actor_type: None,
            idempotency_key: None,
        };
        ctrl_db::deployment::insert(&self.db, &d, 1).await?;
        ctrl_db::deployment::compare_and_set_status(
            &self.db,
            &id,
            ctrl_core::status::DeploymentStatus::Pending,
            ctrl_core::status::DeploymentStatus::Ready,
            2,
        )
        .await?;
        Ok(id)
    }

    /// The deployment's running instances in the region (as a report would).
    pub(crate) async fn instances(&self, deployment: &str, addresses: &[SocketAddr]) -> Result<()> {
        self.instances_in(&self.region, deployment, addresses).await
    }

    /// A region dev/`name` (created); returns its id.
    pub(crate) async fn region(&self, name: &str) -> Result<String> {
        let mut conn = self.db.acquire().await?;
        let r = ctrl_db::cluster::upsert_region(
            &mut conn,
            &generate(IdKind::Region, &mut rand::rng()),
            name,
            "dev",
            1,
        )
        .await?;
        Ok(r.id)
    }

    /// The deployment's running instances in region `region_id`.
    pub(crate) async fn instances_in(
        &self,
        region_id: &str,
        deployment: &str,
        addresses: &[SocketAddr],
    ) -> Result<()> {
        let reported: Vec<ReportedInstance> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| ReportedInstance {
                new_id: generate(IdKind::Instance, &mut rand::rng()),
                name: format!("{deployment}-{i}"),
                address: a.to_string(),
                cpu_millicores: 100,
                memory_mib: 64,
                status: InstanceStatus::Running,
            })
            .collect();
        let mut tx = self.db.begin().await?;
        ctrl_db::instance::replace_for_deployment(
            &mut tx,
            &self.workspace,
            deployment,
            region_id,
            &reported,
            3,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A route `host` → `deployment`; returns its id.
    pub(crate) async fn route(
        &self,
        host: &str,
        deployment: &str,
        environment: &str,
    ) -> Result<String> {
        let id = generate(IdKind::FrontlineRoute, &mut rand::rng());
        let r = ctrl_db::route::NewRoute {
            id: &id,
            workspace_id: &self.workspace,
            project_id: &self.project,
            app_id: &self.app,
            environment_id: environment,
            deployment_id: deployment,
            fqdn: host,
            sticky: Sticky::Live,
        };
        ctrl_db::route::insert(&self.db, &r, 4).await?;
        Ok(id)
    }

    /// Points a route at another deployment (a rollback's write).
    pub(crate) async fn move_route(&self, route: &str, deployment: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        ctrl_db::route::reassign(&mut tx, &[route.to_owned()], deployment, 5).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stops a deployment (desired state) and removes its instances.
    pub(crate) async fn stop(&self, deployment: &str) -> Result<()> {
        ctrl_db::deployment::set_desired_state(&self.db, deployment, DesiredState::Stopped, 6)
            .await?;
        ctrl_db::deployment::compare_and_set_status(
            &self.db,
            deployment,
            ctrl_core::status::DeploymentStatus::Ready,
            ctrl_core::status::DeploymentStatus::Stopped,
            6,
        )
        .await?;
        ctrl_db::instance::delete_for_deployment(&self.db, deployment, &self.region, 6).await?;
        Ok(())
    }
}

/// cluster-sync in process; `restart` keeps the port.
pub(crate) struct Sync {
    pub(crate) addr: SocketAddr,
    db: MySqlPool,
    ingress: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sync {
    pub(crate) async fn start(db: &MySqlPool, ingress: &str) -> Result<Self> {
        let port = ctrl_testkit::free_port()?;
        let mut s = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            db: db.clone(),
            ingress: ingress.to_owned(),
            stop: None,
            task: None,
        };
        s.serve().await?;
        Ok(s)
    }

    async fn serve(&mut self) -> Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        for region in EDGE_REGIONS {
            ctrl_cluster_sync::agents::ensure(
                &self.db,
                &ctrl_cluster_sync::agents::Binding::frontline(
                    "dev",
                    region,
                    &format!("test edge {region}"),
                ),
                &edge_token(region),
                0,
            )
            .await?;
        }
        let sync = ClusterSync::new(self.db.clone(), &self.ingress, Settings::default());
        let app = ctrl_cluster_sync::server::router(sync.clone(), self.db.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            // Graceful, so every connection closes: the edge must see the
            // control plane gone, not a connection that lingers.
            let _ = axum::serve(ctrl_runtime::net::nodelay(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                    sync.begin_shutdown();
                })
                .await;
        }));
        Ok(())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving; every connection closes.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.serve().await
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A database, cluster-sync, a Restate ingress and an edge following them.
pub(crate) struct World {
    pub(crate) seed: Seed,
    pub(crate) sync: Sync,
    pub(crate) edge: Edge,
    pub(crate) ingress: Ingress,
    _db: ctrl_testkit::TestDatabase,
}

/// A [`World`] whose edge has `extra` appended to its config.
pub(crate) async fn world(extra: &str) -> Result<World> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let ingress = Ingress::start().await?;
    let sync = Sync::start(&db.pool, &ingress.url).await?;
    let edge = Edge::start(&sync.url(), extra).await?;
    Ok(World {
        seed,
        sync,
        edge,
        ingress,
        _db: db,
    })
}

impl World {
    /// Routes `host(label)` to a new HTTP/1.1 production deployment whose
    /// instances are `addresses`; its id.
    pub(crate) async fn host_on(&self, label: &str, addresses: &[SocketAddr]) -> Result<String> {
        let d = self
            .seed
            .deployment(&self.seed.production, UpstreamProtocol::Http1)
            .await?;
        self.seed.instances(&d, addresses).await?;
        self.seed
            .route(&host(label), &d, &self.seed.production)
            .await?;
        Ok(d)
    }
}

/// frontline in process.
pub(crate) struct Edge {
    pub(crate) http: SocketAddr,
    pub(crate) https: SocketAddr,
    pub(crate) admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Edge {
    /// Starts an edge for region dev/local following `control_url`;
    /// `extra` is appended to its TOML config.
    pub(crate) async fn start(control_url: &str, extra: &str) -> Result<Self> {
        Self::start_in("local", control_url, extra).await
    }

    /// [`Edge::start`] for region dev/`region`.
    pub(crate) async fn start_in(region: &str, control_url: &str, extra: &str) -> Result<Self> {
        let token = edge_token(region);
        let toml = format!(
            r#"
            [region]
            platform = "dev"
            name = "{region}"
            [control]
            url = "{control_url}"
            token = "{token}"
            call_timeout_seconds = 3
            [listen]
            http = "127.0.0.1:0"
            https = "127.0.0.1:0"
            admin = "127.0.0.1:0"
            shutdown_grace_seconds = 2
            workers = 2
            [vault]
            keys = [{{ id = "k1", key = "{VAULT_KEY}" }}]
            {extra}
            "#
        );
        let config: frontline::config::Config = ctrl_runtime::config::parse(
            &toml,
            "frontline.toml",
            &std::collections::HashMap::new(),
            frontline::config::ENV_PREFIX,
        )?;
        let listeners = frontline::server::Listeners::bind(&config).await?;
        let http = listeners.http.local_addr()?;
        let https = listeners.https.as_ref().context("https")?.local_addr()?;
        let admin = listeners.admin.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            frontline::server::run(&config, listeners, async move {
                let _ = rx.await;
            })
            .await
        });
        let edge = Self {
            http,
            https,
            admin,
            stop: Some(tx),
            task: Some(task),
        };
        Ok(edge)
    }

    /// Waits until the edge has a table in which `host` answers `status`.
    pub(crate) async fn wait_host(&self, host: &str, status: StatusCode) -> Result<()> {
        wait_until(
            &format!("{host} to answer {status}"),
            Duration::from_secs(20),
            || async {
                get(self.http, host, "/")
                    .await
                    .is_ok_and(|r| r.status == status)
            },
        )
        .await
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Result<(StatusCode, String)> {
        let r = get(self.admin, "localhost", path).await?;
        Ok((r.status, r.text()))
    }

    pub(crate) async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// An answer, body read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) version: hyper::Version,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn deployment(&self) -> Option<&str> {
        self.headers
            .get("x-ctrl-deployment")
            .and_then(|v| v.to_str().ok())
    }
}

async fn read(resp: Response<Incoming>) -> Result<Answer> {
    let (parts, body) = resp.into_parts();
    Ok(Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

/// HTTP/1.1 to `addr` with `Host: host`.
pub(crate) async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer> {
    send(
        addr,
        Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?,
    )
    .await
}

/// One request on a fresh HTTP/1.1 connection.
pub(crate) async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Answer> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    read(resp).await
}

/// A test CA and TLS clients trusting it.
pub(crate) struct Ca {
    ca: ctrl_testkit::ca::LocalCa,
}

impl Ca {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            ca: ctrl_testkit::ca::LocalCa::generate()?,
        })
    }

    /// Stores a certificate for `hostname` the way the Certificate object will.
    pub(crate) async fn store(&self, seed: &Seed, hostname: &str) -> Result<()> {
        let leaf = self.ca.leaf(&[hostname])?;
        let (chain, key) = (leaf.chain_pem, leaf.key_pem);
        let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
            id: "k1".into(),
            base64: VAULT_KEY.into(),
        }])?;
        let sealed = vault.seal(&seed.workspace, key.as_bytes())?;
        let c = ctrl_db::certificate::NewCertificate {
            new_id: &generate(IdKind::Certificate, &mut rand::rng()),
            workspace_id: &seed.workspace,
            hostname,
            certificate: &chain,
            encrypted_private_key: &sealed,
            not_after: 4_000_000_000_000,
        };
        ctrl_db::certificate::upsert(&seed.db, &c, 7).await?;
        Ok(())
    }

    fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca.cert_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(frontline::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// GET over TLS with SNI `host`, HTTP/2 if `h2` (ALPN), else HTTP/1.1.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        h2: bool,
    ) -> Result<Answer> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn)?);
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
        let tls = connector.connect(name, tcp).await?;
        let io = TokioIo::new(tls);
        if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let uri = format!("https://{host}{path}");
            let resp = sender
                .send_request(Request::get(uri).body(Full::new(Bytes::new()))?)
                .await?;
            read(resp).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let resp = sender
                .send_request(
                    Request::get(path)
                        .header("host", host)
                        .body(Full::new(Bytes::new()))?,
                )
                .await?;
            read(resp).await
        }
    }
}

/// An in-process app instance: `GET /` answers its name; `POST /echo`
/// streams the body back; `GET /bytes?n=N` streams N bytes; `GET /headers`
/// shows the request headers; `/ws` is a WebSocket echo. Serves HTTP/1.1,
/// or only h2c.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub(crate) accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub(crate) async fn start(name: &str, h2c: bool) -> Result<Self> {
        Self::start_with(name, h2c, None).await
    }

    /// [`Backend::start`]; an HTTP/1.1 backend closes a keep-alive
    /// connection left idle for `idle_close`, if given.
    pub(crate) async fn start_with(
        name: &str,
        h2c: bool,
        idle_close: Option<Duration>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (name, counter, accepts) = (Arc::<str>::from(name), hits.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepts.fetch_add(1, Ordering::Relaxed);
                let (name, counter) = (name.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        app(name.clone(), req)
                    });
                    let io = TokioIo::new(stream);
                    if h2c {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let mut b = hyper::server::conn::http1::Builder::new();
                        if let Some(idle) = idle_close {
                            // Waiting for the next request's head counts as
                            // the header read: an idle connection is closed.
                            b.timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(idle);
                        }
                        let _ = b.serve_connection(io, service).with_upgrades().await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            hits,
            accepted,
            task,
        })
    }
}

fn boxed(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn app(name: Arc<str>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match path.as_str() {
        "/echo" => {
            let body = req.into_body().map_err(std::io::Error::other).boxed();
            Response::new(body)
        }
        "/bytes" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..n.div_ceil(chunk.len())).map(move |i| {
                let len = chunk.len().min(n - i * chunk.len());
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
            });
            Response::new(BodyExt::boxed(StreamBody::new(futures::stream::iter(
                chunks,
            ))))
        }
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(boxed(out))
        }
        "/ws" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .cloned()
                .unwrap_or(hyper::header::HeaderValue::from_static(""));
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(io) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
            let mut r = Response::new(boxed(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert("connection", "upgrade".parse().expect("static"));
            h.insert("upgrade", "websocket".parse().expect("static"));
            h.insert("sec-websocket-accept", accept.parse().expect("base64"));
            r
        }
        _ => Response::new(boxed(format!("{name}\n"))),
    };
    Ok(resp)
}

/// A real restate-server with a stand-in for the worker's `Deploy` object:
/// its `Wake` records the deployments asked to wake, so the edge's wake
/// travels through Restate's ingress (idempotency keys included) as in
/// production.
pub(crate) struct Ingress {
    pub(crate) url: String,
    pub(crate) woken: Arc<std::sync::Mutex<Vec<String>>>,
    _restate: ctrl_testkit::RestateServer,
}

#[derive(Clone)]
struct DeployStandIn {
    woken: Arc<std::sync::Mutex<Vec<String>>>,
}

#[restate_sdk::object(name = "Deploy")]
impl DeployStandIn {
    #[handler(name = "Wake")]
    async fn wake(
        &self,
        ctx: restate_sdk::prelude::ObjectContext<'_>,
        restate_sdk::prelude::Json(input): restate_sdk::prelude::Json<
            ctrl_core::workflows::WakeInput,
        >,
    ) -> restate_sdk::prelude::HandlerResult<()> {
        assert_eq!(input.deployment_id, ctx.key());
        self.woken.lock().expect("lock").push(input.deployment_id);
        Ok(())
    }
}

impl Ingress {
    pub(crate) async fn start() -> Result<Self> {
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let restate = ctrl_testkit::RestateServer::start().await?;
        restate
            .serve_and_register(
                restate_sdk::prelude::Endpoint::builder()
                    .bind(DeployStandIn {
                        woken: woken.clone(),
                    })
                    .build(),
            )
            .await?;
        Ok(Self {
            url: restate.ingress_url(),
            woken,
            _restate: restate,
        })
    }
}

pub(crate) fn host(label: &str) -> String {
    format!("{label}.{APEX}")
}
