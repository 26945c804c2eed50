//! The pure part of a reconcile: from the inputs (as last seen) and the live collectors to what
//! every input's labels and `Assigned` condition should be. No I/O, so it is tested directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::assignment::{self, AssignmentConfig, AssignmentError, CollectorId, InputKey};
use crate::handover::{HANDOVER_AT_ANNOTATION, HandoverState, move_annotations};

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
    /// Its handover annotations.
    pub handover: HandoverState,
}

/// What the plan needs besides the inputs.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// Collectors that may be given inputs: live and not leaving.
    pub eligible: Vec<CollectorId>,
    /// Every live collector, leaving ones included: a move away from one of them is fenced,
    /// since it is still gathering.
    pub live: BTreeSet<String>,
    /// The operator's clock, nanoseconds since the Unix epoch.
    pub now_unix_nanos: u64,
    /// Fence margin of a move between live collectors; zero writes no fences.
    pub margin: Duration,
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
    /// The annotations the operator owns on it (handover), likewise.
    pub annotations: BTreeMap<String, String>,
    /// True when the assignment wants to move it but a handover is still in flight: it stays
    /// until the fence passes.
    pub deferred: bool,
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

    /// True when this plan moves the input with a fence (between live collectors).
    pub fn is_fenced_move(&self, view: &InputView) -> bool {
        self.moved_from(view).is_some() && self.annotations.contains_key(HANDOVER_AT_ANNOTATION)
    }
}

/// Plans every input. Sharded inputs are spread over the eligible collectors with bounded-load
/// consistent hashing, keeping each on its current collector where the algorithm allows, and
/// never moving one whose handover is still in flight; a move between live collectors carries
/// a fence. Every-node inputs get the placement label instead.
pub fn plan(inputs: &[InputView], context: &PlanContext, config: &AssignmentConfig) -> Result<Vec<InputPlan>, AssignmentError> {
    let live = &context.eligible;
    let now = context.now_unix_nanos;
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
                annotations: input.handover.kept(now),
                deferred: false,
                collector: Some("EveryNode".to_owned()),
                assigned: Assigned {
                    status: true,
                    reason: "EveryNode",
                    message: "runs on every node-local collector".to_owned(),
                },
            },
            Placement::Sharded => match assignment.as_ref().and_then(|a| a.collector_of(input.key.as_str())) {
                Some(wanted) => {
                    let current = input.collector_label.as_deref();
                    let moves = current != Some(wanted.as_str());
                    let deferred = moves && current.is_some() && input.handover.is_pending(now);
                    let (collector, annotations) = match current {
                        Some(current) if deferred => (current, input.handover.kept(now)),
                        _ if moves => {
                            let from_is_live = current.is_some_and(|c| context.live.contains(c));
                            (wanted.as_str(), move_annotations(current, from_is_live, now, context.margin))
                        }
                        _ => (wanted.as_str(), input.handover.kept(now)),
                    };
                    InputPlan {
                        key: input.key.clone(),
                        labels: BTreeMap::from([(COLLECTOR_LABEL.to_owned(), collector.to_owned())]),
                        annotations,
                        deferred,
                        collector: Some(collector.to_owned()),
                        assigned: Assigned {
                            status: true,
                            reason: "Assigned",
                            message: format!("assigned to collector {collector}"),
                        },
                    }
                }
                // No live collector: keep the last owner's label so that the input resumes where
                // it was as soon as that collector is back, and say why nothing runs it.
                None => InputPlan {
                    key: input.key.clone(),
                    labels: input
                        .collector_label
                        .iter()
                        .map(|c| (COLLECTOR_LABEL.to_owned(), c.clone()))
                        .collect(),
                    annotations: input.handover.kept(now),
                    deferred: false,
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

    use crate::handover::{DEFAULT_MARGIN, PREVIOUS_COLLECTOR_ANNOTATION};

    const SEC: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * SEC;

    fn view(key: &str, placement: Placement, label: Option<&str>) -> InputView {
        InputView { key: InputKey::from(key), placement, collector_label: label.map(str::to_owned), handover: HandoverState::default() }
    }

    fn collectors(names: &[&str]) -> PlanContext {
        PlanContext {
            eligible: names.iter().map(|n| CollectorId::new(*n)).collect(),
            live: names.iter().map(|n| (*n).to_owned()).collect(),
            now_unix_nanos: NOW,
            margin: DEFAULT_MARGIN,
        }
    }

    /// The views a watch shows after `plans` were written.
    fn written(plans: &[InputPlan]) -> Vec<InputView> {
        plans
            .iter()
            .map(|p| InputView {
                handover: HandoverState::from_annotations(&p.annotations).0,
                ..view(p.key.as_str(), Placement::Sharded, p.labels.get(COLLECTOR_LABEL).map(String::as_str))
            })
            .collect()
    }

    #[test]
    fn every_sharded_input_gets_exactly_one_live_collector() {
        let inputs: Vec<InputView> = (0..30).map(|i| view(&format!("ns/in-{i}"), Placement::Sharded, None)).collect();
        let live = collectors(&["c-0", "c-1", "c-2"]);
        let plans = plan(&inputs, &live, &AssignmentConfig::default()).unwrap();
        assert_eq!(plans.len(), 30);
        for p in &plans {
            let owner = p.labels.get(COLLECTOR_LABEL).unwrap();
            assert!(live.eligible.iter().any(|c| c.as_str() == owner));
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
        let plans = plan(&[view("ns/a", Placement::Sharded, Some("c-0"))], &collectors(&[]), &AssignmentConfig::default()).unwrap();
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
        // The dead collector gathers nothing more: no fence, the new owner starts at once.
        assert!(!plans[0].is_fenced_move(&inputs[0]));
        assert_eq!(plans[0].annotations, BTreeMap::from([(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), "c-dead".to_owned())]));
    }

    /// 30 inputs on c-0..c-2, then c-3 joins: the moves it causes.
    fn scale_out() -> (Vec<InputView>, Vec<InputPlan>) {
        let fresh: Vec<InputView> = (0..30).map(|i| view(&format!("ns/in-{i}"), Placement::Sharded, None)).collect();
        let placed = written(&plan(&fresh, &collectors(&["c-0", "c-1", "c-2"]), &AssignmentConfig::default()).unwrap());
        let plans = plan(&placed, &collectors(&["c-0", "c-1", "c-2", "c-3"]), &AssignmentConfig::default()).unwrap();
        (placed, plans)
    }

    #[test]
    fn a_move_between_live_collectors_carries_a_fence_margin_ahead() {
        let (placed, plans) = scale_out();
        let moved: Vec<(&InputView, &InputPlan)> = placed.iter().zip(&plans).filter(|(v, p)| p.moved_from(v).is_some()).collect();
        assert!(!moved.is_empty());
        for (view, plan) in moved {
            assert!(plan.is_fenced_move(view));
            let (state, error) = HandoverState::from_annotations(&plan.annotations);
            assert_eq!(error, None);
            assert_eq!(state.previous.as_deref(), view.collector_label.as_deref());
            assert_eq!(state.fence_unix_nanos, Some(NOW + 2 * SEC));
        }
        // Unmoved inputs carry no handover.
        assert!(placed.iter().zip(&plans).filter(|(v, p)| p.moved_from(v).is_none()).all(|(_, p)| p.annotations.is_empty()));
    }

    #[test]
    fn a_leaving_collector_gets_no_inputs_and_its_moves_are_fenced() {
        let (placed, _) = scale_out();
        let mut context = collectors(&["c-0", "c-1", "c-2"]);
        context.eligible.retain(|c| c.as_str() != "c-2");
        let plans = plan(&placed, &context, &AssignmentConfig::default()).unwrap();
        for (view, plan) in placed.iter().zip(&plans) {
            assert_ne!(plan.collector.as_deref(), Some("c-2"));
            if view.collector_label.as_deref() == Some("c-2") {
                assert!(plan.is_fenced_move(view), "{plan:?}");
            }
        }
    }

    #[test]
    fn an_input_in_flight_is_not_moved_again_until_its_fence_passes() {
        let (placed, plans) = scale_out();
        let after = written(&plans);
        // c-3 leaves again at once (live, draining): its inputs would go back, but their fences
        // are pending.
        let mut back = collectors(&["c-0", "c-1", "c-2", "c-3"]);
        back.eligible.retain(|c| c.as_str() != "c-3");
        let deferred = plan(&after, &back, &AssignmentConfig::default()).unwrap();
        for ((before, view), plan) in placed.iter().zip(&after).zip(&deferred) {
            if view.collector_label.as_deref() == Some("c-3") {
                assert!(plan.deferred, "{plan:?}");
                assert_eq!(plan.labels, BTreeMap::from([(COLLECTOR_LABEL.to_owned(), "c-3".to_owned())]));
                assert_eq!(HandoverState::from_annotations(&plan.annotations).0, view.handover, "the fence is kept as written");
            } else {
                assert_eq!(plan.labels.get(COLLECTOR_LABEL), before.collector_label.as_ref());
            }
        }
        // At the fence they move, with a new fence naming c-3.
        let at_fence = PlanContext { now_unix_nanos: NOW + 2 * SEC, ..back };
        let moved = plan(&after, &at_fence, &AssignmentConfig::default()).unwrap();
        for (view, plan) in after.iter().zip(&moved).filter(|(v, _)| v.collector_label.as_deref() == Some("c-3")) {
            assert!(!plan.deferred && plan.is_fenced_move(view));
            assert_eq!(plan.annotations[PREVIOUS_COLLECTOR_ANNOTATION], "c-3");
            assert_eq!(HandoverState::from_annotations(&plan.annotations).0.fence_unix_nanos, Some(NOW + 4 * SEC));
        }
    }

    #[test]
    fn a_new_leader_mid_handover_rewrites_nothing() {
        // Same inputs (labels and fences as written), same collectors, any time before the
        // fence: the plan is what is already there.
        let (_, plans) = scale_out();
        let after = written(&plans);
        for now in [NOW, NOW + SEC, NOW + 2 * SEC - 1] {
            let context = PlanContext { now_unix_nanos: now, ..collectors(&["c-0", "c-1", "c-2", "c-3"]) };
            let again = plan(&after, &context, &AssignmentConfig::default()).unwrap();
            assert_eq!(again, plans);
        }
    }

    #[test]
    fn without_a_margin_moves_are_unfenced() {
        let fresh: Vec<InputView> = (0..30).map(|i| view(&format!("ns/in-{i}"), Placement::Sharded, None)).collect();
        let placed = written(&plan(&fresh, &collectors(&["c-0", "c-1", "c-2"]), &AssignmentConfig::default()).unwrap());
        let context = PlanContext { margin: Duration::ZERO, ..collectors(&["c-0", "c-1", "c-2", "c-3"]) };
        let plans = plan(&placed, &context, &AssignmentConfig::default()).unwrap();
        assert!(placed.iter().zip(&plans).any(|(v, p)| p.moved_from(v).is_some()));
        assert!(placed.iter().zip(&plans).all(|(v, p)| !p.is_fenced_move(v)));
    }
}
