//! The ClusterService client: gRPC over one HTTP/2 connection, the bearer
//! token and a timeout on every call (open streams are watched by HTTP/2
//! keepalives instead: a dead server ends them).

use std::time::Duration;

use ctrl_proto::Bearer;
use ctrl_proto::client::CallLimit;
use ctrl_proto::ctrl::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A cheaply cloned client for one cluster.
#[derive(Debug, Clone)]
pub struct Control {
    client: ClusterServiceClient<InterceptedService<Channel, Bearer>>,
    key: pb::ClusterKey,
    limit: CallLimit,
}

impl Control {
    /// A client for the server at `url` (connects lazily, reconnects on its own).
    pub fn new(
        url: &str,
        token: &str,
        key: pb::ClusterKey,
        call_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let channel = ctrl_proto::client::control_channel(url)?;
        let bearer = Bearer::new(token).ok_or_else(|| {
            anyhow::anyhow!("control.token contains characters not allowed in a header")
        })?;
        let client = ClusterServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(16 << 20);
        Ok(Self {
            client,
            key,
            limit: CallLimit(call_timeout),
        })
    }

    /// This agent's cluster key.
    pub fn key(&self) -> &pb::ClusterKey {
        &self.key
    }

    /// Registers or refreshes the cluster.
    pub async fn heartbeat(
        &self,
        backend: pb::AgentBackend,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        let req = pb::HeartbeatRequest {
            cluster: Some(self.key.clone()),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            backend: backend as i32,
        };
        let mut client = self.client.clone();
        self.limit
            .bounded("heartbeat", client.heartbeat(self.limit.unary(req)))
            .await
    }

    /// Opens the change stream after `version_last_seen`.
    pub async fn watch(
        &self,
        version_last_seen: u64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
        let req = pb::WatchRequest {
            cluster: Some(self.key.clone()),
            version_last_seen,
        };
        let mut client = self.client.clone();
        self.limit
            .bounded("opening the watch", client.watch(req))
            .await
    }

    /// Opens a full snapshot.
    pub async fn snapshot(
        &self,
    ) -> Result<tonic::Streaming<pb::SyncDesiredStateResponse>, tonic::Status> {
        let req = pb::SyncDesiredStateRequest {
            cluster: Some(self.key.clone()),
        };
        let mut client = self.client.clone();
        self.limit
            .bounded("opening the snapshot", client.sync_desired_state(req))
            .await
    }

    /// One deployment's desired state; `Ok(None)` = it should not exist.
    pub async fn desired(
        &self,
        deployment_id: &str,
    ) -> Result<Option<pb::DeploymentState>, tonic::Status> {
        let req = pb::GetDesiredDeploymentStateRequest {
            cluster: Some(self.key.clone()),
            deployment_id: deployment_id.to_owned(),
        };
        let mut client = self.client.clone();
        let lookup = client.get_desired_deployment_state(self.limit.unary(req));
        match self.limit.bounded("desired-state lookup", lookup).await {
            Ok(r) => Ok(r.state),
            Err(s) if s.code() == tonic::Code::NotFound && !s.message().contains("Heartbeat") => {
                Ok(None)
            }
            Err(s) => Err(s),
        }
    }

    /// Reports a deployment's instances or their removal.
    pub async fn report(
        &self,
        change: pb::report_deployment_status_request::Change,
    ) -> Result<(), tonic::Status> {
        let req = pb::ReportDeploymentStatusRequest {
            cluster: Some(self.key.clone()),
            change: Some(change),
        };
        let mut client = self.client.clone();
        self.limit
            .bounded(
                "status report",
                client.report_deployment_status(self.limit.unary(req)),
            )
            .await
            .map(|_| ())
    }

    /// Reports instance lifecycle events.
    pub async fn events(&self, events: Vec<pb::InstanceEvent>) -> Result<(), tonic::Status> {
        let req = pb::ReportInstanceEventsRequest {
            cluster: Some(self.key.clone()),
            events,
        };
        let mut client = self.client.clone();
        self.limit
            .bounded(
                "event report",
                client.report_instance_events(self.limit.unary(req)),
            )
            .await
            .map(|_| ())
    }

    /// Opens the stream of log requests for this cluster.
    pub async fn log_requests(
        &self,
    ) -> Result<tonic::Streaming<pb::WatchLogRequestsResponse>, tonic::Status> {
        let req = pb::WatchLogRequestsRequest {
            cluster: Some(self.key.clone()),
        };
        let mut client = self.client.clone();
        self.limit
            .bounded("opening the log requests", client.watch_log_requests(req))
            .await
    }

    /// Pushes one batch of a log request's lines; `Ok(true)` = stop, the
    /// reader is gone.
    pub async fn push_logs(&self, push: pb::PushLogsRequest) -> Result<bool, tonic::Status> {
        let req = pb::PushLogsRequest {
            cluster: Some(self.key.clone()),
            ..push
        };
        let mut client = self.client.clone();
        self.limit
            .bounded("log push", client.push_logs(self.limit.unary(req)))
            .await
            .map(|r| r.stop)
    }
}
