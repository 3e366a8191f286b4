//! AcmeService: the key authorizations the edge serves for HTTP-01
//! challenges (called by frontline with its agent credential).

use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::state::AppState;

/// An ACME token as RFC 8555 §8.3 defines it: base64url, no padding.
fn is_acme_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// AcmeService.VerifyCertificate: the key authorization of an open HTTP-01
/// challenge for the domain and token; `not_found` if none is open.
pub async fn verify_certificate(
    s: &AppState,
    req: pb::VerifyCertificateRequest,
) -> Result<pb::VerifyCertificateResponse, ApiError> {
    let domain = req.domain.trim_end_matches('.').to_ascii_lowercase();
    if !ctrl_core::names::is_hostname(&domain) {
        return Err(ApiError::invalid(
            "domain",
            format!(
                "{:?} is not a hostname",
                ctrl_core::names::clip(&req.domain, 64)
            ),
        ));
    }
    if !is_acme_token(&req.token) {
        return Err(ApiError::invalid(
            "token",
            "must be 16-256 base64url characters (A-Z, a-z, 0-9, '-', '_')",
        ));
    }
    match ctrl_db::certificate::http01_authorization(s.db(), &domain, &req.token).await? {
        Some(authorization) => Ok(pb::VerifyCertificateResponse { authorization }),
        None => Err(ApiError::NotFound(format!(
            "no open HTTP-01 challenge for {domain} with this token"
        ))),
    }
}
