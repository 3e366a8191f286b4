//! CustomDomainService: users' own hostnames for an environment. The API
//! validates and stores; the worker's `CustomDomain` object verifies the
//! DNS records, routes the domain and asks for its certificate.

use ctrl_core::domains::{
    is_apex, normalize_custom_domain, ownership_txt_name, ownership_txt_value,
};
use ctrl_core::id::{IdKind, generate};
use ctrl_core::workflows as wf;
use ctrl_db::certificate;
use ctrl_db::custom_domain::{self, CustomDomain, NewCustomDomain};
use ctrl_db::types::{ChallengeStatus, CustomDomainStatus};
use ctrl_proto::ctrl::v1 as pb;
use rand::Rng;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

/// Length of the random ownership token.
const TOKEN_LEN: usize = 32;
/// Length of the random label of a CNAME target.
const TARGET_LABEL_LEN: usize = 16;

fn random_base36(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// AddCustomDomain: validates the hostname, stores it pending with a fresh
/// ownership token and CNAME target, and starts verification. If the
/// worker cannot be reached, the row is removed again (nothing half-made).
pub async fn add_custom_domain(
    s: &AppState,
    req: pb::AddCustomDomainRequest,
) -> Result<pb::AddCustomDomainResponse, ApiError> {
    let config = s.custom_domains();
    if config.cname_domain.is_empty() {
        return Err(ApiError::FailedPrecondition(
            "custom domains are not enabled on this server (set custom_domains.cname_domain in ctrl-api's config)".into(),
        ));
    }
    validate::id("environment_id", IdKind::Environment, &req.environment_id)?;
    let mut platform: Vec<&str> = config.platform_domains.iter().map(String::as_str).collect();
    platform.push(&config.cname_domain);
    let domain = normalize_custom_domain(&req.domain, &platform)
        .map_err(|e| ApiError::invalid("domain", e))?;
    let env = ctrl_db::tenancy::get_environment(s.db(), &req.environment_id).await?;
    if env.deleting_at.is_some() {
        return Err(ApiError::FailedPrecondition(format!(
            "environment {} is being deleted",
            env.id
        )));
    }
    let id = generate(IdKind::CustomDomain, &mut rand::rng());
    let token = random_base36(TOKEN_LEN);
    let target = format!(
        "{}.{}",
        random_base36(TARGET_LABEL_LEN),
        config.cname_domain
    );
    let now = s.now_ms();
    custom_domain::insert(
        s.db(),
        &NewCustomDomain {
            id: &id,
            workspace_id: &env.workspace_id,
            project_id: &env.project_id,
            app_id: &env.app_id,
            environment_id: &env.id,
            domain: &domain,
            verification_token: &token,
            target_cname: &target,
        },
        now,
    )
    .await
    .map_err(|e| match e {
        ctrl_db::Error::AlreadyExists { .. } => ApiError::AlreadyExists(format!(
            "{domain} is already added in this workspace; `ctrl domains get {domain}` shows it"
        )),
        other => other.into(),
    })?;
    if let Err(e) = start_verification(s, &id, &format!("start:{id}")).await {
        let _ = custom_domain::delete(s.db(), &id).await;
        return Err(e);
    }
    let row = custom_domain::get(s.db(), &id).await?;
    Ok(pb::AddCustomDomainResponse {
        custom_domain: Some(to_pb(s, &row).await?),
    })
}

async fn start_verification(s: &AppState, id: &str, key: &str) -> Result<(), ApiError> {
    s.ingress()
        .send(
            wf::CUSTOM_DOMAIN_SERVICE,
            id,
            wf::START_VERIFICATION_HANDLER,
            &wf::CustomDomainInput {
                domain_id: id.to_owned(),
            },
            key,
        )
        .await
        .map(|_| ())
}

/// A user's domain by id (the platform's own rows are not users').
async fn load(s: &AppState, id: &str) -> Result<CustomDomain, ApiError> {
    validate::id("domain_id", IdKind::CustomDomain, id)?;
    match custom_domain::find(s.db(), id).await? {
        Some(d) if !d.platform => Ok(d),
        _ => Err(ApiError::NotFound(format!("custom domain {id} not found"))),
    }
}

/// GetCustomDomain.
pub async fn get_custom_domain(
    s: &AppState,
    req: pb::GetCustomDomainRequest,
) -> Result<pb::GetCustomDomainResponse, ApiError> {
    let d = load(s, &req.domain_id).await?;
    Ok(pb::GetCustomDomainResponse {
        custom_domain: Some(to_pb(s, &d).await?),
    })
}

/// ListCustomDomains: an environment's domains, by name.
pub async fn list_custom_domains(
    s: &AppState,
    req: pb::ListCustomDomainsRequest,
) -> Result<pb::ListCustomDomainsResponse, ApiError> {
    validate::id("environment_id", IdKind::Environment, &req.environment_id)?;
    ctrl_db::tenancy::get_environment(s.db(), &req.environment_id).await?;
    let rows = custom_domain::list_by_environment(s.db(), &req.environment_id).await?;
    let mut custom_domains = Vec::with_capacity(rows.len());
    for d in &rows {
        custom_domains.push(to_pb(s, d).await?);
    }
    Ok(pb::ListCustomDomainsResponse { custom_domains })
}

/// DeleteCustomDomain: the worker removes route, challenge, certificate and
/// row durably; the call returns once it has.
pub async fn delete_custom_domain(
    s: &AppState,
    req: pb::DeleteCustomDomainRequest,
) -> Result<pb::DeleteCustomDomainResponse, ApiError> {
    let d = load(s, &req.domain_id).await?;
    s.ingress()
        .call::<_, serde_json::Value>(
            wf::CUSTOM_DOMAIN_SERVICE,
            &d.id,
            wf::DELETE_CUSTOM_DOMAIN_HANDLER,
            &wf::CustomDomainInput {
                domain_id: d.id.clone(),
            },
        )
        .await?;
    Ok(pb::DeleteCustomDomainResponse {})
}

/// RetryVerification: starts verification over (a failed domain gets
/// another 24 hours; a verified one is checked again).
pub async fn retry_verification(
    s: &AppState,
    req: pb::RetryVerificationRequest,
) -> Result<pb::RetryVerificationResponse, ApiError> {
    let d = load(s, &req.domain_id).await?;
    s.ingress()
        .call::<_, serde_json::Value>(
            wf::CUSTOM_DOMAIN_SERVICE,
            &d.id,
            wf::START_VERIFICATION_HANDLER,
            &wf::CustomDomainInput {
                domain_id: d.id.clone(),
            },
        )
        .await?;
    let d = load(s, &req.domain_id).await?;
    Ok(pb::RetryVerificationResponse {
        status: status_pb(d.verification_status) as i32,
    })
}

fn status_pb(s: CustomDomainStatus) -> pb::CustomDomainStatus {
    match s {
        CustomDomainStatus::Pending => pb::CustomDomainStatus::Pending,
        CustomDomainStatus::Verifying => pb::CustomDomainStatus::Verifying,
        CustomDomainStatus::Verified => pb::CustomDomainStatus::Verified,
        CustomDomainStatus::Failed => pb::CustomDomainStatus::Failed,
    }
}

/// The records a user must publish: the TXT ownership record, and a CNAME
/// to the target (or, for an apex, A/AAAA records to the edge).
fn records(s: &AppState, d: &CustomDomain) -> Vec<pb::DnsRecord> {
    let mut out = vec![pb::DnsRecord {
        r#type: "TXT".into(),
        name: ownership_txt_name(&d.domain),
        value: ownership_txt_value(&d.verification_token),
    }];
    if is_apex(&d.domain) {
        for addr in &s.custom_domains().apex_addresses {
            out.push(pb::DnsRecord {
                r#type: if addr.is_ipv4() { "A" } else { "AAAA" }.into(),
                name: d.domain.clone(),
                value: addr.to_string(),
            });
        }
    } else {
        out.push(pb::DnsRecord {
            r#type: "CNAME".into(),
            name: d.domain.clone(),
            value: d.target_cname.clone(),
        });
    }
    out
}

async fn to_pb(s: &AppState, d: &CustomDomain) -> Result<pb::CustomDomain, ApiError> {
    let cert = certificate::find(s.db(), &d.domain).await?;
    let challenge = certificate::challenge(s.db(), &d.id).await?;
    let owned_cert = cert.filter(|_| d.verification_status == CustomDomainStatus::Verified);
    let status = match (&challenge, &owned_cert) {
        (Some(c), _) if c.status == ChallengeStatus::Failed => pb::CertificateStatus::Failed,
        (Some(c), _) if c.status == ChallengeStatus::Pending => pb::CertificateStatus::Issuing,
        (_, Some(_)) => pb::CertificateStatus::Issued,
        (Some(c), None) if c.status == ChallengeStatus::Waiting => pb::CertificateStatus::Issuing,
        _ => pb::CertificateStatus::None,
    };
    Ok(pb::CustomDomain {
        id: d.id.clone(),
        workspace_id: d.workspace_id.clone(),
        project_id: d.project_id.clone(),
        app_id: d.app_id.clone(),
        environment_id: d.environment_id.clone(),
        domain: d.domain.clone(),
        status: status_pb(d.verification_status) as i32,
        records: records(s, d),
        ownership_verified: d.ownership_verified,
        cname_verified: d.cname_verified,
        verification_error: d.verification_error.clone().unwrap_or_default(),
        check_attempts: d.check_attempts,
        last_checked_at: d.last_checked_at.unwrap_or(0),
        created_at: d.created_at,
        target_cname: d.target_cname.clone(),
        apex: is_apex(&d.domain),
        certificate: Some(pb::CertificateState {
            status: status as i32,
            expires_at: owned_cert.as_ref().map_or(0, |c| c.not_after),
            // Why it failed, or why an order under way is being retried.
            error: challenge
                .filter(|c| matches!(c.status, ChallengeStatus::Failed | ChallengeStatus::Pending))
                .and_then(|c| c.last_error)
                .unwrap_or_default(),
            issued_at: owned_cert.as_ref().map_or(0, |c| c.updated_at),
        }),
    })
}
