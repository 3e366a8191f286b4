use std::net::TcpListener;

use anyhow::Result;
use ctrl_testkit::{Error, RestatePorts, RestateServer, free_ports, http_client};
use restate_sdk::prelude::*;
use tokio::net::TcpListener as TokioListener;

/// A tiny Restate service to register and invoke.
struct Greeter;

#[restate_sdk::service(name = "Greeter")]
impl Greeter {
    #[handler(name = "greet")]
    async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("Hello, {name}!"))
    }
}

async fn greet(ingress: &str, name: &str) -> Result<(reqwest::StatusCode, String)> {
    let response = http_client()
        .post(format!("{ingress}/Greeter/greet"))
        .json(&name)
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

#[tokio::test]
async fn registers_an_h2c_service_and_invokes_it_through_ingress() -> Result<()> {
    let mut restate = RestateServer::start().await?;

    // Serve the endpoint in-process on a free loopback port (h2c).
    let listener = TokioListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let server = HttpServer::new(Endpoint::builder().bind(Greeter).build());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve_with_cancel(listener, async {
                let _ = stopped.await;
            })
            .await;
    });

    let registration = restate.register(&endpoint).await?;
    let services = registration["services"].to_string();
    assert!(services.contains("Greeter"), "registration: {registration}");

    let (status, body) = greet(&restate.ingress_url(), "ctrl").await?;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(body, "\"Hello, ctrl!\"");

    // A crash and restart keeps the registration (it is in the data dir).
    let before = restate.pid();
    restate.restart().await?;
    assert_ne!(restate.pid(), before);
    let (status, body) = greet(&restate.ingress_url(), "again").await?;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(body, "\"Hello, again!\"");

    let _ = stop.send(());
    serving.await?;
    Ok(())
}

#[tokio::test]
async fn a_startup_failure_reports_the_log_tail() -> Result<()> {
    // Occupy the admin port so the server cannot bind it.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let [ingress, fabric] = free_ports()?;
    let ports = RestatePorts {
        ingress,
        admin: taken.local_addr()?.port(),
        fabric,
    };
    let err = RestateServer::builder()
        .ports(ports)
        .start()
        .await
        .expect_err("the admin port is taken");
    let Error::Startup { name, tail, .. } = &err else {
        panic!("expected a startup error, got {err}");
    };
    assert_eq!(name, "restate-server");
    assert!(
        tail.contains("in use"),
        "log tail should explain the failure: {tail}"
    );
    assert!(err.to_string().contains("last lines of"), "{err}");
    Ok(())
}
