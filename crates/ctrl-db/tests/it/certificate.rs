//! Which certificates the renewal job picks up.

use ctrl_core::id::IdKind;
use ctrl_db::certificate;
use ctrl_db::custom_domain::{self, Check, NewCustomDomain};
use ctrl_db::types::ChallengeStatus;

use crate::fixtures::{NOW, id, tree};

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn renewal_picks_waiting_expiring_and_long_failed_challenges_of_verified_domains()
-> anyhow::Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let p = &db.pool;
    let t = tree(p).await?;
    // (name, verified domain?, challenge status, expires_at, updated_at)
    let cases = [
        ("waiting", true, ChallengeStatus::Waiting, NOW, NOW),
        (
            "expiring",
            true,
            ChallengeStatus::Verified,
            NOW + 10 * DAY,
            NOW,
        ),
        (
            "current",
            true,
            ChallengeStatus::Verified,
            NOW + 60 * DAY,
            NOW,
        ),
        (
            "failed-long-ago",
            true,
            ChallengeStatus::Failed,
            NOW,
            NOW - 2 * DAY,
        ),
        ("failed-just-now", true, ChallengeStatus::Failed, NOW, NOW),
        (
            "in-flight",
            true,
            ChallengeStatus::Pending,
            NOW,
            NOW - 2 * DAY,
        ),
        ("unverified", false, ChallengeStatus::Waiting, NOW, NOW),
    ];
    for (name, verified, status, expires_at, updated_at) in cases {
        let domain_id = id(IdKind::CustomDomain);
        let domain = format!("{name}.customer.test");
        custom_domain::insert(
            p,
            &NewCustomDomain {
                id: &domain_id,
                workspace_id: &t.workspace,
                project_id: &t.project,
                app_id: &t.app,
                environment_id: &t.production,
                domain: &domain,
                verification_token: "token",
                target_cname: &format!("{name}.edge.test"),
            },
            NOW,
        )
        .await?;
        if verified {
            let found = Check {
                cname_verified: true,
                ownership_verified: false,
                summary: "",
            };
            assert!(custom_domain::mark_verified(p, &domain_id, found, NOW).await?);
        }
        certificate::ensure_challenge(p, &t.workspace, &domain_id, "http-01", NOW, NOW).await?;
        certificate::set_challenge_status(
            p,
            &domain_id,
            status,
            Some(expires_at),
            None,
            updated_at,
        )
        .await?;
    }
    let due = certificate::due(p, NOW + 30 * DAY, NOW - DAY, 100).await?;
    let mut names: Vec<&str> = due
        .iter()
        .map(|d| d.hostname.split('.').next().unwrap_or_default())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["expiring", "failed-long-ago", "waiting"]);
    Ok(())
}
