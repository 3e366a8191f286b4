//! The control plane, as frontline calls it: EdgeService (routing table,
//! wake, traffic) and AcmeService (HTTP-01), gRPC over one HTTP/2
//! connection each, the edge's agent credential on every call, every call bounded.

use std::time::Duration;

use ctrl_proto::Bearer;
use ctrl_proto::client::CallLimit;
use ctrl_proto::ctrl::v1 as pb;
use pb::acme_service_client::AcmeServiceClient;
use pb::edge_service_client::EdgeServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::Config;

type Authed = InterceptedService<Channel, Bearer>;

/// A cheaply cloned client.
#[derive(Debug, Clone)]
pub struct Control {
    edge: EdgeServiceClient<Authed>,
    acme: AcmeServiceClient<Authed>,
    region: pb::EdgeRegion,
    limit: CallLimit,
}

impl Control {
    /// Clients for the configured URLs (connecting lazily, reconnecting on
    /// their own).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let bearer = Bearer::new(&config.control.token).ok_or_else(|| {
            anyhow::anyhow!("control.token contains characters not allowed in a header")
        })?;
        let edge_channel = ctrl_proto::client::control_channel(&config.control.url)?;
        let acme_channel = match &config.control.acme_url {
            Some(url) => ctrl_proto::client::control_channel(url)?,
            None => edge_channel.clone(),
        };
        Ok(Self {
            edge: EdgeServiceClient::with_interceptor(edge_channel, bearer.clone())
                .max_decoding_message_size(16 << 20),
            acme: AcmeServiceClient::with_interceptor(acme_channel, bearer),
            region: pb::EdgeRegion {
                platform: config.region.platform.clone(),
                region: config.region.name.clone(),
            },
            limit: CallLimit(Duration::from_secs(config.control.call_timeout_seconds)),
        })
    }

    /// Opens the routing-table stream after `version_last_seen`.
    pub async fn watch(
        &self,
        version_last_seen: u64,
    ) -> Result<tonic::Streaming<pb::WatchRoutesResponse>, tonic::Status> {
        let req = pb::WatchRoutesRequest {
            region: Some(self.region.clone()),
            version_last_seen,
        };
        let mut client = self.edge.clone();
        self.limit
            .bounded("opening the routing watch", client.watch_routes(req))
            .await
    }

    /// Asks for an idle deployment to be woken.
    pub async fn wake(&self, deployment_id: &str) -> Result<(), tonic::Status> {
        let req = pb::EdgeServiceWakeDeploymentRequest {
            region: Some(self.region.clone()),
            deployment_id: deployment_id.to_owned(),
        };
        let mut client = self.edge.clone();
        self.limit
            .bounded("wake", client.wake_deployment(self.limit.unary(req)))
            .await
            .map(|_| ())
    }

    /// Reports traffic counts.
    pub async fn report_traffic(
        &self,
        traffic: Vec<pb::DeploymentTraffic>,
    ) -> Result<(), tonic::Status> {
        let req = pb::ReportTrafficRequest {
            region: Some(self.region.clone()),
            traffic,
        };
        let mut client = self.edge.clone();
        self.limit
            .bounded(
                "traffic report",
                client.report_traffic(self.limit.unary(req)),
            )
            .await
            .map(|_| ())
    }

    /// The key authorization of an open HTTP-01 challenge.
    pub async fn acme_authorization(
        &self,
        domain: &str,
        token: &str,
    ) -> Result<String, tonic::Status> {
        let req = pb::VerifyCertificateRequest {
            domain: domain.to_owned(),
            token: token.to_owned(),
        };
        let mut client = self.acme.clone();
        self.limit
            .bounded(
                "ACME lookup",
                client.verify_certificate(self.limit.unary(req)),
            )
            .await
            .map(|r| r.authorization)
    }
}
