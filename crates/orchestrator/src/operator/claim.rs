//! The ownership check on one unit of compute by name, and why a unit that is not this
//! owner's is refused: the command runs it before it deletes anything, and the workflow-worker
//! again right before its delete ([`crate::operator_delete`]).

use tea_compute::{ComputeOwner, ComputeProvider, ComputeSummary, NotOurs, ProviderError};

/// What the ownership check made of the unit of a name (see [`claim_unit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitClaim {
    /// This owner's unit.
    Ours(ComputeSummary),
    /// No unit has that name.
    Missing,
    /// A unit has that name but is not this owner's (why, see [`refusal`]). Nothing may act
    /// on it.
    Refused(NotOurs),
}

/// Looks up the unit `name` whoever marked it and runs on it the ownership check the sweeper's
/// listing runs ([`ComputeOwner::claim`], behind every provider's `list_ours`). `compute
/// delete` runs it in the command, and the workflow-worker again right before it deletes.
pub async fn claim_unit(
    provider: &dyn ComputeProvider,
    name: &str,
) -> Result<UnitClaim, ProviderError> {
    let Some(found) = provider.find(name).await? else {
        return Ok(UnitClaim::Missing);
    };
    Ok(match found.claimed_by(provider.owner()) {
        Ok(unit) => UnitClaim::Ours(unit),
        Err(why) => UnitClaim::Refused(why),
    })
}

/// Who refuses to delete a unit that is not its owner's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuser {
    /// The `compute delete` command.
    Command,
    /// The workflow-worker carrying out the command's delete.
    WorkflowWorker,
}

/// Why `refuser`, of owner `ours`, refuses to delete the unit `name` of the `kind` provider:
/// naming both owners when another one marked it, and what to do.
pub fn refusal(
    refuser: Refuser,
    (kind, ours): (&str, &ComputeOwner),
    name: &str,
    why: &NotOurs,
) -> String {
    let ours = ours.as_str();
    match (why, refuser) {
        (NotOurs::MarkedBy(theirs), Refuser::Command) => format!(
            "compute {name} belongs to another deployment: its owner mark is {theirs:?} and this \
             deployment's owner is {ours:?}; refusing to delete it, nothing was touched (if that \
             deployment is yours, run the command as it: COMPUTE_OWNER={theirs})"
        ),
        (NotOurs::MarkedBy(theirs), Refuser::WorkflowWorker) => format!(
            "compute {name} carries the owner mark {theirs:?} but this workflow-worker's owner is \
             {ours:?}; refusing to delete it, nothing was touched (the command and the \
             workflow-workers of its task queue must share COMPUTE_OWNER)"
        ),
        (NotOurs::Unmarked, _) => format!(
            "compute {name} carries no owner mark, so no deployment of this project created it \
             (this deployment's owner is {ours:?}); refusing to delete it, nothing was touched \
             (remove it by hand on the {kind} provider if it is yours)"
        ),
        (NotOurs::NotGenerated, _) => format!(
            "{name} is not a compute name this project generates (`ext-`, 26 hex digits, \
             `-<attempt>`, as `compute list` shows them); refusing to delete it, nothing was \
             touched"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_both_owners_and_what_to_do() {
        let ours = ComputeOwner::new("prod").unwrap();
        let say = |refuser, why| refusal(refuser, ("docker", &ours), "ext-1", &why);
        let theirs = || NotOurs::MarkedBy("staging".into());
        let command = say(Refuser::Command, theirs());
        assert!(
            command
                .contains(r#"its owner mark is "staging" and this deployment's owner is "prod""#)
                && command.contains("COMPUTE_OWNER=staging"),
            "{command}"
        );
        let worker = say(Refuser::WorkflowWorker, theirs());
        assert!(
            worker.contains(r#""staging" but this workflow-worker's owner is "prod""#),
            "{worker}"
        );
        let unmarked = say(Refuser::Command, NotOurs::Unmarked);
        assert!(
            unmarked.contains("no owner mark") && unmarked.contains("docker provider"),
            "{unmarked}"
        );
        for text in [
            command,
            worker,
            unmarked,
            say(Refuser::Command, NotOurs::NotGenerated),
        ] {
            assert!(text.contains("nothing was touched"), "{text}");
        }
    }
}
