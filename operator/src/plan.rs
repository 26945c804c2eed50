//! The pure part of a reconcile: from the inputs (as last seen) and the live collectors to what
//! every input's labels and `Assigned` condition should be. No I/O, so it is tested directly.

use std::collections::BTreeMap;

use crate::assignment::{self, AssignmentConfig, AssignmentError, CollectorId, InputKey};

/// Label naming the collector pod that runs a sharded input.
pub const COLLECTOR_LABEL: &str = "metricshard.io/collector";
/// Label marking an input every node-local collector runs.
pub const PLACEMENT_LABEL: &str = "metricshard.io/placement";

/// How an input is placed, as the plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// One collector of the StatefulSet.
    Sharded,
    /// Every node-local collector.
    EveryNode,
}

/// An input as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputView {
    /// `namespace/name`.
    pub key: InputKey,
    /// Placement from the spec.
    pub placement: Placement,
    /// The current value of [`COLLECTOR_LABEL`], if any.
    pub collector_label: Option<String>,
}

/// The `Assigned` condition an input should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Condition status.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// What one input should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPlan {
    /// The input.
    pub key: InputKey,
    /// The labels the operator owns on it, with their values (absent keys are removed).
    pub labels: BTreeMap<String, String>,
    /// `status.collector`.
    pub collector: Option<String>,
    /// The `Assigned` condition.
    pub assigned: Assigned,
}

impl InputPlan {
    /// The collector this input moves away from, if the plan moves it between live owners or
    /// away from a dead one.
    pub fn moved_from<'a>(&self, view: &'a InputView) -> Option<&'a str> {
        let new = self.labels.get(COLLECTOR_LABEL);
        view.collector_label.as_deref().filter(|old| new.is_some_and(|new| new != old))
    }
}

/// Plans every input. Sharded inputs are spread over `live` collectors with bounded-load
/// consistent hashing, keeping each on its current collector where the algorithm allows;
/// every-node inputs get the placement label instead.
pub fn plan(inputs: &[InputView], live: &[CollectorId], config: &AssignmentConfig) -> Result<Vec<InputPlan>, AssignmentError> {
    let sharded: Vec<InputKey> = inputs.iter().filter(|i| i.placement == Placement::Sharded).map(|i| i.key.clone()).collect();
    let previous: BTreeMap<InputKey, CollectorId> = inputs
        .iter()
        .filter(|i| i.placement == Placement::Sharded)
        .filter_map(|i| i.collector_label.as_ref().map(|c| (i.key.clone(), CollectorId::new(c.clone()))))
        .collect();
    let assignment = if live.is_empty() {
        None
    } else {
        Some(assignment::assign(&sharded, live, Some(&previous), config)?)
    };
    Ok(inputs
        .iter()
        .map(|input| match input.placement {
            Placement::EveryNode => InputPlan {
                key: input.key.clone(),
                labels: BTreeMap::from([(PLACEMENT_LABEL.to_owned(), "EveryNode".to_owned())]),
                collector: Some("EveryNode".to_owned()),
                assigned: Assigned {
                    status: true,
                    reason: "EveryNode",
                    message: "runs on every node-local collector".to_owned(),
                },
            },
            Placement::Sharded => match assignment.as_ref().and_then(|a| a.collector_of(input.key.as_str())) {
                Some(collector) => InputPlan {
                    key: input.key.clone(),
                    labels: BTreeMap::from([(COLLECTOR_LABEL.to_owned(), collector.as_str().to_owned())]),
                    collector: Some(collector.as_str().to_owned()),
                    assigned: Assigned {
                        status: true,
                        reason: "Assigned",
                        message: format!("assigned to collector {collector}"),
                    },
                },
                // No live collector: keep the last owner's label so that the input resumes where
                // it was as soon as that collector is back, and say why nothing runs it.
                None => InputPlan {
                    key: input.key.clone(),
                    labels: input
                        .collector_label
                        .iter()
                        .map(|c| (COLLECTOR_LABEL.to_owned(), c.clone()))
                        .collect(),
                    collector: None,
                    assigned: Assigned {
                        status: false,
                        reason: "NoCollectors",
                        message: "no live collector: check the collector StatefulSet".to_owned(),
                    },
                },
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(key: &str, placement: Placement, label: Option<&str>) -> InputView {
        InputView { key: InputKey::from(key), placement, collector_label: label.map(str::to_owned) }
    }

    fn collectors(names: &[&str]) -> Vec<CollectorId> {
        names.iter().map(|n| CollectorId::new(*n)).collect()
    }

    #[test]
    fn every_sharded_input_gets_exactly_one_live_collector() {
        let inputs: Vec<InputView> = (0..30).map(|i| view(&format!("ns/in-{i}"), Placement::Sharded, None)).collect();
        let live = collectors(&["c-0", "c-1", "c-2"]);
        let plans = plan(&inputs, &live, &AssignmentConfig::default()).unwrap();
        assert_eq!(plans.len(), 30);
        for p in &plans {
            let owner = p.labels.get(COLLECTOR_LABEL).unwrap();
            assert!(live.iter().any(|c| c.as_str() == owner));
            assert_eq!(p.collector.as_deref(), Some(owner.as_str()));
            assert!(p.assigned.status);
        }
    }

    #[test]
    fn a_stable_membership_moves_nothing() {
        let live = collectors(&["c-0", "c-1", "c-2"]);
        let fresh: Vec<InputView> = (0..50).map(|i| view(&format!("ns/in-{i}"), Placement::Sharded, None)).collect();
        let first = plan(&fresh, &live, &AssignmentConfig::default()).unwrap();
        let labelled: Vec<InputView> = first
            .iter()
            .map(|p| view(p.key.as_str(), Placement::Sharded, p.labels.get(COLLECTOR_LABEL).map(String::as_str)))
            .collect();
        let second = plan(&labelled, &live, &AssignmentConfig::default()).unwrap();
        assert_eq!(first, second);
        assert!(second.iter().zip(&labelled).all(|(p, v)| p.moved_from(v).is_none()));
    }

    #[test]
    fn without_collectors_inputs_keep_their_label_and_say_why() {
        let plans = plan(&[view("ns/a", Placement::Sharded, Some("c-0"))], &[], &AssignmentConfig::default()).unwrap();
        assert_eq!(plans[0].labels.get(COLLECTOR_LABEL).map(String::as_str), Some("c-0"));
        assert_eq!((plans[0].assigned.status, plans[0].assigned.reason), (false, "NoCollectors"));
    }

    #[test]
    fn every_node_inputs_are_labelled_for_the_daemonset_and_not_sharded() {
        let inputs = [view("ns/host", Placement::EveryNode, None), view("ns/web", Placement::Sharded, None)];
        let plans = plan(&inputs, &collectors(&["c-0"]), &AssignmentConfig::default()).unwrap();
        assert_eq!(plans[0].labels, BTreeMap::from([(PLACEMENT_LABEL.to_owned(), "EveryNode".to_owned())]));
        assert_eq!(plans[1].labels.get(COLLECTOR_LABEL).map(String::as_str), Some("c-0"));
    }

    #[test]
    fn an_input_of_a_dead_collector_moves_and_reports_where_from() {
        let inputs = [view("ns/a", Placement::Sharded, Some("c-dead"))];
        let plans = plan(&inputs, &collectors(&["c-0"]), &AssignmentConfig::default()).unwrap();
        assert_eq!(plans[0].moved_from(&inputs[0]), Some("c-dead"));
    }
}
