//! The operator's side of a run: create the run's concert before, read what it sold after.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::api::{Account, CreatedConcert, ListedConcert, NewConcert, Sales};

/// Account reads in flight at once during the audit.
const ACCOUNT_READS_IN_FLIGHT: usize = 16;

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No answer.
    #[error("{what}: no answer from the server: {source}")]
    Transport {
        /// The call.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
    /// An answer other than the one expected.
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        /// The call.
        what: String,
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// An answer that is not the documented body.
    #[error("{what}: unreadable answer: {source}")]
    Body {
        /// The call.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The answer lacks what was asked for.
    #[error("{0}: not in the answer")]
    Missing(String),
}

/// Admin calls against one server (any node of a deployment will do).
#[derive(Debug, Clone)]
pub struct Admin {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Admin {
    /// Talks to `base` (`http://host:port`) with the admin key.
    #[must_use]
    pub fn new(base: &str, key: &str) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self { client, base: base.trim_end_matches('/').to_owned(), key: key.to_owned() }
    }

    /// Creates the run's concert.
    ///
    /// # Errors
    /// When the server does not answer `201` with the created concert.
    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, AdminError> {
        let request = self.client.post(format!("{}/api/v1/admin/concerts", self.base)).json(concert);
        self.call("creating the concert", request, 201).await
    }

    /// The concert as `GET /api/v1/concerts` lists it (with its opening, if it has one).
    ///
    /// # Errors
    /// When the server does not answer `200` with a list naming it.
    pub async fn concert(&self, concert: Uuid) -> Result<ListedConcert, AdminError> {
        let request = self.client.get(format!("{}/api/v1/concerts", self.base));
        let listed: Vec<ListedConcert> = self.call("listing the concerts", request, 200).await?;
        listed
            .into_iter()
            .find(|c| c.concert_id == concert)
            .ok_or_else(|| AdminError::Missing(format!("concert {concert} in the list")))
    }

    /// Revokes `user`'s token for `concert` as the operator `loadtest`; answers when, or `None`
    /// when the user has no token for it (404).
    ///
    /// # Errors
    /// When the server answers otherwise.
    pub async fn revoke(&self, concert: Uuid, user: &str) -> Result<Option<DateTime<Utc>>, AdminError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Revoked {
            revoked_at: DateTime<Utc>,
        }
        let request = self
            .client
            .post(format!("{}/api/v1/admin/concerts/{concert}/users/{user}/revoke", self.base))
            .header("X-Operator", "loadtest");
        match self.call::<Revoked>(&format!("revoking {user}'s token"), request, 200).await {
            Ok(revoked) => Ok(Some(revoked.revoked_at)),
            Err(AdminError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// What the concert sold.
    ///
    /// # Errors
    /// When the server does not answer `200` with the listing.
    pub async fn sales(&self, concert: Uuid) -> Result<Sales, AdminError> {
        let request = self.client.get(format!("{}/api/v1/admin/concerts/{concert}/sales", self.base));
        self.call("reading the sales", request, 200).await
    }

    /// The account of each of `users`, a few at a time.
    ///
    /// # Errors
    /// The first account that could not be read.
    pub async fn accounts(&self, users: &[String]) -> Result<HashMap<String, Account>, AdminError> {
        let permits = Arc::new(Semaphore::new(ACCOUNT_READS_IN_FLIGHT));
        let mut reads = JoinSet::new();
        for user in users {
            let (admin, user, permits) = (self.clone(), user.clone(), Arc::clone(&permits));
            reads.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let request = admin.client.get(format!("{}/api/v1/admin/users/{user}/account", admin.base));
                let account: Result<Account, AdminError> =
                    admin.call(&format!("reading {user}'s account"), request, 200).await;
                (user, account)
            });
        }
        let mut accounts = HashMap::new();
        while let Some(joined) = reads.join_next().await {
            let Ok((user, account)) = joined else { continue };
            accounts.insert(user, account?);
        }
        Ok(accounts)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        expected: u16,
    ) -> Result<T, AdminError> {
        let response = request
            .header("X-Admin-Key", &self.key)
            .send()
            .await
            .map_err(|source| AdminError::Transport { what: what.to_owned(), source })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|source| AdminError::Transport { what: what.to_owned(), source })?;
        if status != expected {
            return Err(AdminError::Status { what: what.to_owned(), status, body });
        }
        serde_json::from_str(&body).map_err(|source| AdminError::Body { what: what.to_owned(), source })
    }
}
