//! Image references: a run's [`ImageRef`] checked and written as `[registry/]repository:tag`,
//! split back into repository and tag, and the image pulled when the engine does not have it.

use std::time::Instant;

use bollard::{Docker, query_parameters::CreateImageOptionsBuilder};
use futures::TryStreamExt;

use super::{
    DockerProvider,
    engine::{engine_error, engine_message, is_connection_error, status_of},
};
use crate::{ImageRef, ProviderError};

/// `[registry/]repository:tag`; an empty registry means an image of the engine (or Docker
/// Hub's, as `docker pull` would).
pub fn image_reference(image: &ImageRef) -> Result<String, ProviderError> {
    let registry = image.registry.trim().trim_end_matches('/');
    let bad = |what: &str, value: &str| {
        ProviderError::permanent(format!(
            "invalid image {what} {value:?}: use lowercase letters, digits and `._-/` (and `:` \
             for a registry's port)"
        ))
    };
    let ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"._-/".contains(&b)
                    || extra.contains(&b)
            })
    };
    if !registry.is_empty() && !ok(registry, b":") {
        return Err(bad("registry", registry));
    }
    if !ok(&image.repository, b"") {
        return Err(bad("repository", &image.repository));
    }
    let tag_ok = !image.tag.is_empty()
        && image.tag.len() <= 128
        && image
            .tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !tag_ok {
        return Err(ProviderError::permanent(format!(
            "invalid image tag {:?}: use letters, digits and `._-` (at most 128)",
            image.tag
        )));
    }
    Ok(if registry.is_empty() {
        format!("{}:{}", image.repository, image.tag)
    } else {
        format!("{registry}/{}:{}", image.repository, image.tag)
    })
}

/// `registry/repo:tag` as (`registry/repo`, `tag`): the tag is after the last `:` that follows
/// the last `/` (a registry's port is not a tag); `latest` when there is none.
pub fn split_reference(image: &str) -> (&str, &str) {
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) => (&image[..after_slash + i], &image[after_slash + i + 1..]),
        None => (image, "latest"),
    }
}

impl DockerProvider {
    /// Makes sure the engine has `image`, pulling it when it does not. A pull that fails is a
    /// permanent error naming the image: waiting will not make it appear.
    pub(super) async fn ensure_image(
        &self,
        docker: &Docker,
        image: &str,
    ) -> Result<(), ProviderError> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("inspecting image {image}"), e)),
        }
        let (repository, tag) = split_reference(image);
        tracing::info!(image, "image not on the engine; pulling it");
        let started = Instant::now();
        let pull = docker
            .create_image(
                Some(
                    CreateImageOptionsBuilder::new()
                        .from_image(repository)
                        .tag(tag)
                        .build(),
                ),
                None,
                None,
            )
            .try_for_each(|_| async { Ok(()) });
        match tokio::time::timeout(self.cfg.pull_timeout, pull).await {
            Ok(Ok(())) => {
                tracing::info!(image, elapsed = ?started.elapsed(), "image pulled");
                Ok(())
            }
            Ok(Err(e)) if is_connection_error(&e) => {
                Err(engine_error(&format!("pulling image {image}"), e))
            }
            Ok(Err(e)) => Err(ProviderError::permanent(format!(
                "image {image} is not on the Docker engine and pulling it failed: {}",
                engine_message(&e)
            ))),
            Err(_) => Err(ProviderError::permanent(format!(
                "image {image} is not on the Docker engine and pulling it did not finish within {}",
                humantime::format_duration(self.cfg.pull_timeout)
            ))),
        }
    }
}
