//! Reading the account's apps: every page of the list (following `links.pages.next`, never
//! sending the token to another origin), one app by name or by id, and an app's creation time.

use std::collections::HashSet;

use reqwest::{Method, Url};

use super::{
    DigitalOceanProvider,
    http::CallError,
    model::{App, AppEnvelope, AppList},
    stats::Operation,
};
use crate::ProviderError;

/// Apps requested per list page (the API maximum).
const PER_PAGE: u32 = 200;
/// Upper bound on list pages followed, against a server that never stops paging.
const MAX_PAGES: usize = 10_000;

impl DigitalOceanProvider {
    /// The app named `name`, if any (lists every page).
    pub(super) async fn find_by_name(&self, name: &str) -> Result<Option<App>, CallError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .find(|app| app.name() == Some(name) && app.id.is_some()))
    }

    /// Every app of the account, following `links.pages.next`.
    pub(super) async fn list_all(&self) -> Result<Vec<App>, CallError> {
        let first = {
            let mut url = self.api.url(&["apps"]);
            url.query_pairs_mut()
                .append_pair("page", "1")
                .append_pair("per_page", &PER_PAGE.to_string());
            url
        };
        let mut apps = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            if !seen.insert(url.to_string()) || seen.len() > MAX_PAGES {
                return Err(CallError {
                    status: None,
                    api_message: None,
                    error: ProviderError::transient(format!(
                        "DigitalOcean list: pagination did not terminate (at {})",
                        url.path()
                    )),
                });
            }
            let page: AppList = self
                .api
                .json(Operation::List, Method::GET, url, None)
                .await?;
            apps.extend(page.apps);
            next = page
                .links
                .and_then(|l| l.pages)
                .and_then(|p| p.next)
                .filter(|n| !n.trim().is_empty())
                .map(|n| self.resolve_next(&n));
        }
        Ok(apps)
    }

    /// The URL to request for a `links.pages.next` value. The token is only ever sent to the
    /// configured API origin: a link elsewhere keeps its query but is re-pointed at our URL.
    pub(super) fn resolve_next(&self, next: &str) -> Url {
        let base = self.api.base();
        match base.join(next) {
            Ok(url) if url.origin() == base.origin() => url,
            parsed => {
                let mut url = self.api.url(&["apps"]);
                url.set_query(parsed.ok().as_ref().and_then(|u| u.query()));
                url
            }
        }
    }

    pub(super) async fn get_app(&self, id: &str) -> Result<App, CallError> {
        let envelope: AppEnvelope = self
            .api
            .json(
                Operation::Get,
                Method::GET,
                self.api.url(&["apps", id]),
                None,
            )
            .await?;
        envelope.app.ok_or_else(|| CallError {
            status: Some(200),
            api_message: None,
            error: ProviderError::transient(format!(
                "DigitalOcean get app {id}: response had no `app`"
            )),
        })
    }
}

/// The app's creation time, when the API gave a real one.
pub(super) fn created_at(app: &App) -> Option<String> {
    app.created_at
        .clone()
        .filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}
