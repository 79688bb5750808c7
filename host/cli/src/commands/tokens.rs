//! `tasker tokens create | list | revoke`: API tokens, kept in the store as hashes.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{Duration, Utc};
use tasker_store::Store;

use crate::app::App;

/// A duration as `30d`, `12h`, `90m` or `45s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("'{s}' is not a duration such as 30d, 12h, 90m or 45s"))?;
    let d = match unit {
        "d" => Duration::try_days(n),
        "h" => Duration::try_hours(n),
        "m" => Duration::try_minutes(n),
        "s" => Duration::try_seconds(n),
        _ => None,
    };
    match d {
        Some(d) if n > 0 => Ok(d),
        _ => bail!("'{s}' is not a duration such as 30d, 12h, 90m or 45s"),
    }
}

impl App {
    /// `tasker tokens create`: prints the secret once.
    pub async fn tokens_create(
        &self,
        name: &str,
        permissions: &str,
        expires: Option<&str>,
    ) -> Result<ExitCode> {
        let now = Utc::now();
        let expires_at = expires.map(parse_duration).transpose()?.map(|d| now + d);
        let permissions: Vec<String> = permissions
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let store = self.store(2).await?;
        let (row, secret) =
            tasker_server::issue_token(&store, name, permissions, expires_at, now).await?;
        eprintln!(
            "token '{}' created with {}{}; it is shown once, store it now:",
            row.name,
            row.permissions.join(","),
            row.expires_at
                .map(|t| format!(", expires {}", t.to_rfc3339()))
                .unwrap_or_default()
        );
        println!("{secret}");
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker tokens list`.
    pub async fn tokens_list(&self) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let now = Utc::now();
        let rows = store.list_tokens().await?;
        crate::report::tokens(&rows, now);
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker tokens revoke`.
    pub async fn tokens_revoke(&self, name: &str) -> Result<ExitCode> {
        let store = self.store(2).await?;
        if store.revoke_token(name, Utc::now()).await? {
            println!("revoked token '{name}'");
            Ok(ExitCode::SUCCESS)
        } else {
            bail!("no active token named '{name}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_unit() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_duration("90m").unwrap(), Duration::minutes(90));
        for bad in ["30", "d", "0d", "3w", "-1d", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
