//! The provider contract as a suite every provider runs (feature `testing`): the guarantees on
//! [`ComputeProvider`] checked against the real thing. The local provider runs it directly, the
//! DigitalOcean provider against the fake App Platform API; a new provider adds one test that
//! builds its [`Subject`] and calls [`run`].
//!
//! What it checks: creating twice, and twice at once, leaves one unit (adopted, same ID);
//! readiness reaches `Ready`; deleting twice succeeds (`Removed`, then `AlreadyGone`), as does
//! deleting an ID that never existed; `list_ours` returns our unit with its creation time and
//! never a unit of another owner or with a foreign name; `find` returns each of them with its
//! mark (ours claimed, the others refused) and no unit for a name nothing has; readiness
//! reports a deployment that
//! failed; readiness reports a unit that died out of band (`Failed`, or a `NotFound` error).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{ComputeHandle, ComputeProvider, ComputeSpec, Deleted, ErrorKind, Readiness, naming};

/// How long a unit may take to become ready, or to be seen failed, in the suite.
const DEADLINE: Duration = Duration::from_secs(60);

/// A provider under test, with the hooks the suite needs to act from outside it.
#[async_trait]
pub trait Subject: Send + Sync {
    /// The provider under test (owned by this subject's owner).
    fn provider(&self) -> Arc<dyn ComputeProvider>;
    /// A spec for a unit named `name` whose worker starts and stays up.
    fn spec(&self, name: &str) -> ComputeSpec;
    /// A spec for a unit named `name` whose deployment fails (arming a fault if need be).
    async fn failing_spec(&self, name: &str) -> ComputeSpec;
    /// Destroys the unit out of band (kills its process, deletes its app behind our back).
    async fn kill(&self, handle: &ComputeHandle);
    /// Makes a unit named `name` that is not ours: another owner's, or one this project did not
    /// create. It must never show in `list_ours`.
    async fn add_foreign(&self, name: &str);
}

/// Runs every check; the error names the failed check and what was seen.
pub async fn run(subject: &dyn Subject) -> Result<(), String> {
    create_twice_gives_one_unit(subject)
        .await
        .map_err(|e| format!("create twice: {e}"))?;
    concurrent_creates_give_one_unit(subject)
        .await
        .map_err(|e| format!("concurrent creates: {e}"))?;
    list_returns_only_ours(subject)
        .await
        .map_err(|e| format!("list ours: {e}"))?;
    failed_deployment_is_reported(subject)
        .await
        .map_err(|e| format!("failed deployment: {e}"))?;
    dead_unit_is_reported(subject)
        .await
        .map_err(|e| format!("dead unit: {e}"))?;
    Ok(())
}

fn fresh_name() -> String {
    let run_id = format!(
        "conformance-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    naming::compute_name(&run_id, 1)
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what} failed: {e}")
}

async fn create(
    provider: &dyn ComputeProvider,
    spec: &ComputeSpec,
) -> Result<ComputeHandle, String> {
    provider
        .create_or_adopt(spec)
        .await
        .map_err(|e| err("create", e))
}

/// Deletes the unit a check made, then gives the check's result.
async fn cleanup(
    provider: &dyn ComputeProvider,
    handle: &ComputeHandle,
    result: Result<(), String>,
) -> Result<(), String> {
    provider
        .delete(&handle.id)
        .await
        .map_err(|e| err("delete", e))?;
    result
}

/// Polls readiness until `done` accepts it; errors (as text) are offered to `done` too.
async fn readiness_until(
    provider: &dyn ComputeProvider,
    handle: &ComputeHandle,
    what: &str,
    done: impl Fn(&Result<Readiness, crate::ProviderError>) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let seen = provider.readiness(handle).await;
        if done(&seen) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{what} not seen within {DEADLINE:?}; last: {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_twice(provider: &dyn ComputeProvider, id: &str) -> Result<(), String> {
    let first = provider.delete(id).await.map_err(|e| err("delete", e))?;
    if first != Deleted::Removed {
        return Err(format!("the first delete said {first:?}, not Removed"));
    }
    let second = provider
        .delete(id)
        .await
        .map_err(|e| err("second delete", e))?;
    if second != Deleted::AlreadyGone {
        return Err(format!(
            "the second delete said {second:?}, not AlreadyGone"
        ));
    }
    Ok(())
}

async fn create_twice_gives_one_unit(subject: &dyn Subject) -> Result<(), String> {
    let provider = subject.provider();
    let name = fresh_name();
    let spec = subject.spec(&name);
    let first = create(provider.as_ref(), &spec).await?;
    let second = provider
        .create_or_adopt(&spec)
        .await
        .map_err(|e| err("second create", e))?;
    if first.id != second.id || !second.adopted {
        return Err(format!(
            "two units or no adoption: {first:?} then {second:?}"
        ));
    }
    readiness_until(provider.as_ref(), &first, "Ready", |r| {
        matches!(r, Ok(Readiness::Ready { .. }))
    })
    .await?;
    let units = provider.list_ours("").await.map_err(|e| err("list", e))?;
    let named = units.iter().filter(|u| u.name == name).count();
    if named != 1 {
        return Err(format!("{named} units named {name} listed: {units:?}"));
    }
    delete_twice(provider.as_ref(), &first.id).await?;
    let gone = provider
        .delete("never-existed-unit")
        .await
        .map_err(|e| err("delete of an unknown id", e))?;
    if gone != Deleted::AlreadyGone {
        return Err(format!("deleting an unknown id said {gone:?}"));
    }
    Ok(())
}

async fn concurrent_creates_give_one_unit(subject: &dyn Subject) -> Result<(), String> {
    let provider = subject.provider();
    let name = fresh_name();
    let spec = subject.spec(&name);
    let (a, b) = tokio::join!(
        provider.create_or_adopt(&spec),
        provider.create_or_adopt(&spec)
    );
    let a = a.map_err(|e| err("create", e))?;
    let b = b.map_err(|e| err("concurrent create", e))?;
    if a.id != b.id {
        return Err(format!("two units for one name: {a:?} and {b:?}"));
    }
    let units = provider.list_ours("").await.map_err(|e| err("list", e))?;
    let named = units.iter().filter(|u| u.name == name).count();
    let result = if named == 1 {
        Ok(())
    } else {
        Err(format!("{named} units named {name} listed"))
    };
    provider.delete(&a.id).await.map_err(|e| err("delete", e))?;
    result
}

async fn list_returns_only_ours(subject: &dyn Subject) -> Result<(), String> {
    let provider = subject.provider();
    let ours = fresh_name();
    let foreign_lookalike = fresh_name();
    subject.add_foreign(&foreign_lookalike).await;
    subject.add_foreign("ext-api").await;
    let handle = create(provider.as_ref(), &subject.spec(&ours)).await?;
    let units = provider.list_ours("").await.map_err(|e| err("list", e))?;
    let result = (|| {
        let unit = units
            .iter()
            .find(|u| u.name == ours)
            .ok_or_else(|| format!("our unit {ours} is not listed: {units:?}"))?;
        if unit.created_at.is_none() {
            return Err(format!("our unit has no creation time: {unit:?}"));
        }
        if let Some(other) = units
            .iter()
            .find(|u| u.name == foreign_lookalike || u.name == "ext-api")
        {
            return Err(format!("a unit that is not ours is listed: {other:?}"));
        }
        if let Some(bad) = units.iter().find(|u| !naming::is_generated_name(&u.name)) {
            return Err(format!(
                "a name this project does not generate is listed: {bad:?}"
            ));
        }
        Ok(())
    })();
    let result = match result {
        Ok(()) => find_tells_whose_a_unit_is(provider.as_ref(), &handle, &foreign_lookalike).await,
        failed => failed,
    };
    cleanup(provider.as_ref(), &handle, result).await
}

/// `find` gives our unit (claimed by our owner, with our ID), another's unit refused by the
/// claim, and nothing for a name no unit has.
async fn find_tells_whose_a_unit_is(
    provider: &dyn ComputeProvider,
    ours: &ComputeHandle,
    foreign: &str,
) -> Result<(), String> {
    let owner = provider.owner();
    let found = provider
        .find(&ours.name)
        .await
        .map_err(|e| err("find", e))?
        .ok_or_else(|| format!("our unit {} is not found by name", ours.name))?;
    let mark = found.mark.clone();
    let unit = found.claimed_by(owner).map_err(|why| {
        format!(
            "our unit {} is not claimed ({why}, mark {mark:?})",
            ours.name
        )
    })?;
    if unit.id != ours.id {
        return Err(format!(
            "found our unit with ID {}, created as {}",
            unit.id, ours.id
        ));
    }
    for name in [foreign, "ext-api"] {
        let found = provider.find(name).await.map_err(|e| err("find", e))?;
        match found.map(|f| f.claimed_by(owner)) {
            Some(Err(_)) => {}
            Some(Ok(unit)) => return Err(format!("a unit that is not ours is claimed: {unit:?}")),
            None => return Err(format!("the unit {name} that is not ours is not found")),
        }
    }
    let missing = fresh_name();
    match provider.find(&missing).await.map_err(|e| err("find", e))? {
        None => Ok(()),
        Some(found) => Err(format!("found a unit nothing created: {found:?}")),
    }
}

async fn failed_deployment_is_reported(subject: &dyn Subject) -> Result<(), String> {
    let provider = subject.provider();
    let name = fresh_name();
    let spec = subject.failing_spec(&name).await;
    let handle = create(provider.as_ref(), &spec).await?;
    let result = readiness_until(provider.as_ref(), &handle, "Failed", |r| {
        matches!(r, Ok(Readiness::Failed { .. }))
    })
    .await;
    cleanup(provider.as_ref(), &handle, result).await
}

async fn dead_unit_is_reported(subject: &dyn Subject) -> Result<(), String> {
    let provider = subject.provider();
    let name = fresh_name();
    let handle = create(provider.as_ref(), &subject.spec(&name)).await?;
    readiness_until(provider.as_ref(), &handle, "Ready", |r| {
        matches!(r, Ok(Readiness::Ready { .. }))
    })
    .await?;
    subject.kill(&handle).await;
    let result = readiness_until(provider.as_ref(), &handle, "Failed or NotFound", |r| {
        matches!(r, Ok(Readiness::Failed { .. }))
            || matches!(r, Err(e) if e.kind == ErrorKind::NotFound)
    })
    .await;
    cleanup(provider.as_ref(), &handle, result).await
}
