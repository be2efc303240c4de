//! The required node affinity that keeps a workload's pods on nodes an image covers
//! (`restrictToCoveredArchitectures`). archway's requirements are ANDed into each of the workload's
//! own node-selector terms, and are a function of the allowed platforms alone, so that the next
//! rollout can take out exactly what the last one put in.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::platform::{ARCH_LABEL, ARM_VARIANT_LABEL, Platform};

/// Alternatives (ORed) of requirements (ANDed) that a node of an allowed platform meets: one for the
/// non-ARM architectures, one for the allowed ARM variants, and, since an ARM node without a variant
/// label counts as v7, one for unlabelled ARM nodes when v7 is allowed.
fn alternatives(allowed: &BTreeSet<Platform>) -> Vec<Vec<NodeSelectorRequirement>> {
    let requirement = |key: &str, operator: &str, values: Vec<String>| NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then_some(values),
    };
    let other: BTreeSet<String> =
        allowed.iter().filter(|p| p.architecture != "arm").map(|p| p.architecture.clone()).collect();
    let variants: Vec<String> = allowed
        .iter()
        .filter(|p| p.architecture == "arm")
        .filter_map(|p| p.variant.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut alternatives = Vec::new();
    if !other.is_empty() {
        alternatives.push(vec![requirement(ARCH_LABEL, "In", other.into_iter().collect())]);
    }
    if !variants.is_empty() {
        let arm = requirement(ARCH_LABEL, "In", vec!["arm".into()]);
        if variants.iter().any(|v| v == "v7") {
            alternatives.push(vec![arm.clone(), requirement(ARM_VARIANT_LABEL, "DoesNotExist", Vec::new())]);
        }
        alternatives.push(vec![arm, requirement(ARM_VARIANT_LABEL, "In", variants)]);
    }
    alternatives
}

/// The workload's terms narrowed to nodes of the `allowed` platforms.
pub fn restrict(own: &[NodeSelectorTerm], allowed: &BTreeSet<Platform>) -> Vec<NodeSelectorTerm> {
    let own: Vec<NodeSelectorTerm> = if own.is_empty() { vec![NodeSelectorTerm::default()] } else { own.to_vec() };
    let mut terms = Vec::new();
    for term in &own {
        for alternative in alternatives(allowed) {
            let mut term = term.clone();
            term.match_expressions.get_or_insert_with(Vec::new).extend(alternative);
            push_unique(&mut terms, term);
        }
    }
    terms
}

/// The workload's own terms, with what [`restrict`] added for `allowed` taken out again.
pub fn unrestrict(current: &[NodeSelectorTerm], allowed: &BTreeSet<Platform>) -> Vec<NodeSelectorTerm> {
    let alternatives = alternatives(allowed);
    let mut terms = Vec::new();
    for term in current {
        let expressions = term.match_expressions.clone().unwrap_or_default();
        let ours = alternatives
            .iter()
            .find(|alt| expressions.len() >= alt.len() && expressions[expressions.len() - alt.len()..] == alt[..]);
        let mut term = term.clone();
        if let Some(alt) = ours {
            let kept = expressions[..expressions.len() - alt.len()].to_vec();
            term.match_expressions = (!kept.is_empty()).then_some(kept);
        }
        if term.match_expressions.is_some() || term.match_fields.is_some() {
            push_unique(&mut terms, term);
        }
    }
    terms
}

fn push_unique(terms: &mut Vec<NodeSelectorTerm>, term: NodeSelectorTerm) {
    if !terms.contains(&term) {
        terms.push(term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(list: &[&str]) -> BTreeSet<Platform> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn zone_term(zone: &str) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "topology.kubernetes.io/zone".into(),
                operator: "In".into(),
                values: Some(vec![zone.into()]),
            }]),
            match_fields: None,
        }
    }

    #[test]
    fn without_own_terms_one_term_per_alternative() {
        let terms = restrict(&[], &platforms(&["linux/amd64", "linux/arm64"]));
        assert_eq!(terms.len(), 1);
        let expressions = terms[0].match_expressions.as_ref().unwrap();
        assert_eq!(expressions[0].key, "kubernetes.io/arch");
        assert_eq!(expressions[0].values.as_deref(), Some(&["amd64".to_string(), "arm64".to_string()][..]));
        assert!(unrestrict(&terms, &platforms(&["linux/amd64", "linux/arm64"])).is_empty());
    }

    #[test]
    fn arm_variants_are_selected_by_label_and_v7_also_without_one() {
        let terms = restrict(&[], &platforms(&["linux/amd64", "linux/arm/v7"]));
        let keys: Vec<Vec<(&str, &str)>> = terms
            .iter()
            .map(|t| t.match_expressions.iter().flatten().map(|r| (r.key.as_str(), r.operator.as_str())).collect())
            .collect();
        assert_eq!(
            keys,
            [
                vec![("kubernetes.io/arch", "In")],
                vec![("kubernetes.io/arch", "In"), ("archway.dev/arm-variant", "DoesNotExist")],
                vec![("kubernetes.io/arch", "In"), ("archway.dev/arm-variant", "In")],
            ]
        );
        // Only v6 allowed: no term admits an unlabelled (v7) ARM node.
        assert_eq!(restrict(&[], &platforms(&["linux/arm/v6"])).len(), 1);
    }

    #[test]
    fn own_terms_are_kept_and_restored() {
        let own = vec![zone_term("a"), zone_term("b")];
        let allowed = platforms(&["linux/amd64", "linux/arm/v7"]);
        let restricted = restrict(&own, &allowed);
        assert_eq!(restricted.len(), 6);
        assert!(
            restricted.iter().all(|t| t.match_expressions.as_ref().unwrap()[0].key == "topology.kubernetes.io/zone")
        );
        assert_eq!(unrestrict(&restricted, &allowed), own);
        // Restricting what is already restricted to the same platforms changes nothing.
        assert_eq!(restrict(&unrestrict(&restricted, &allowed), &allowed), restricted);
        // Terms of another allowed set are not ours: left as they are.
        assert_eq!(unrestrict(&restricted, &platforms(&["linux/amd64"])).len(), 6);
    }
}
