//! Per-group phases: the group rules, one group equal to the plain scheduler, groups that
//! back off on their own, resume, and misuse.

use phase_scheduler::{
    DeterministicPhase, Error, GroupRule, GroupedScheduler, PhaseScheduler, QualityReport,
};

use crate::common::{BAD, GOOD, SEVERE, small};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

const MODEL: &[&str] = &[
    "head.weight",
    "layers.10.w",
    "layers.0.b",
    "layers.0.w",
    "layers.1.w",
    "layers.x.w",
    "tok.weight",
];

#[test]
fn blocks_rule_groups_by_index_and_keeps_a_remainder() {
    let g = GroupRule::blocks("layers.").assign(&names(MODEL)).unwrap();
    assert_eq!(g.names(), names(&["", "layers.0", "layers.1", "layers.10"]));
    // Sorted parameters: head, layers.0.b, layers.0.w, layers.1.w, layers.10.w, layers.x.w, tok.
    assert_eq!(
        g.params(),
        names(&[
            "head.weight",
            "layers.0.b",
            "layers.0.w",
            "layers.1.w",
            "layers.10.w",
            "layers.x.w",
            "tok.weight"
        ])
    );
    assert_eq!(g.members(), &[0, 1, 1, 2, 3, 0, 0]);
    assert_eq!(g.index("layers.10"), Some(3));
    assert_eq!(g.index("layers.2"), None);
    // Input order does not matter.
    let mut reversed = names(MODEL);
    reversed.reverse();
    assert_eq!(GroupRule::blocks("layers.").assign(&reversed).unwrap(), g);
}

#[test]
fn prefixes_rule_takes_the_longest_prefix() {
    let rule = GroupRule::Prefixes(names(&["layers.", "layers.1"]));
    let g = rule.assign(&names(MODEL)).unwrap();
    assert_eq!(g.names(), names(&["", "layers.", "layers.1"]));
    // layers.1.w and layers.10.w both start with "layers.1".
    assert_eq!(g.members(), &[0, 1, 1, 2, 2, 1, 0]);
    let whole = GroupRule::Whole.assign(&names(MODEL)).unwrap();
    assert_eq!(whole.names(), names(&[""]));
    assert!(whole.members().iter().all(|&m| m == 0));
}

#[test]
fn bad_rules_are_typed_errors() {
    let model = names(MODEL);
    let cases = [
        GroupRule::blocks(""),
        GroupRule::blocks("blocks."),
        GroupRule::Prefixes(vec![]),
        GroupRule::Prefixes(names(&["layers.", ""])),
        GroupRule::Prefixes(names(&["layers.", "layers."])),
        GroupRule::Prefixes(names(&["nothing."])),
        // Every name starting with "layers.0" also starts with the longer "layers.0.":
        // the shorter prefix holds nothing.
        GroupRule::Prefixes(names(&["layers.0", "layers.0."])),
    ];
    for rule in cases {
        match rule.assign(&model) {
            Err(Error::InvalidConfig { parameter, .. }) => assert_eq!(parameter, "groups"),
            other => panic!("{rule:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(GroupRule::Whole.assign(&[]).is_err());
    assert!(GroupRule::Whole.assign(&names(&["a", "a"])).is_err());
    assert!(GroupedScheduler::new(small(), &[]).is_err());
    assert!(GroupedScheduler::new(small(), &names(&["b", "a"])).is_err());
}

/// Drives a plain and a one-group scheduler with the same reports and losses.
#[test]
fn one_group_is_the_plain_scheduler() {
    let mut plain = PhaseScheduler::new(small()).unwrap();
    let mut grouped = GroupedScheduler::new(small(), &names(&[""])).unwrap();
    for step in 0..200u64 {
        assert_eq!(plain.peek(), grouped.peek());
        let a = plain.begin_step().unwrap();
        let b = grouped.begin_step().unwrap();
        assert_eq!(a, b);
        let report = [GOOD, BAD, GOOD, SEVERE][(step % 7 % 4) as usize];
        if a.phase == DeterministicPhase::Correct {
            plain.report_quality(report).unwrap();
            grouped.report_quality(0, report).unwrap();
        }
        if a.needs_backward || step % 3 == 0 {
            let loss = 1.0 / (1.0 + step as f32);
            plain.end_step(loss).unwrap();
            grouped.end_step(loss).unwrap();
        } else {
            plain.end_step_without_loss().unwrap();
            grouped.end_step_without_loss().unwrap();
        }
        assert_eq!(plain.stats(), grouped.group_stats(0).unwrap());
        assert_eq!(plain.stats().full_steps, grouped.backward_steps());
        assert_eq!(plain.stats().predicted_steps, grouped.predicted_steps());
    }
    assert_eq!(grouped.group_backward_steps(), grouped.backward_steps());
}

/// Group 1 reports bad predictions at every Correct step, group 0 good ones: group 1 backs
/// off to Full on its own while group 0 keeps predicting.
#[test]
fn a_bad_group_backs_off_alone() {
    let mut s = GroupedScheduler::new(small(), &names(&["a", "b"])).unwrap();
    let mut mixed = 0;
    for _ in 0..120 {
        let info = s.begin_step().unwrap();
        let steps = s.group_steps().to_vec();
        if steps[0].needs_backward != steps[1].needs_backward {
            mixed += 1;
            assert!(info.needs_backward);
        }
        for (i, st) in steps.iter().enumerate() {
            if st.phase == DeterministicPhase::Correct {
                let r = if i == 0 { GOOD } else { SEVERE };
                s.report_quality(i, r).unwrap();
            }
        }
        if info.needs_backward {
            s.end_step(1.0).unwrap();
        } else {
            s.end_step_without_loss().unwrap();
        }
    }
    let (a, b) = (s.group_stats(0).unwrap(), s.group_stats(1).unwrap());
    assert!(b.backed_off, "the bad group must back off");
    assert!(!a.backed_off, "the good group must not");
    assert!(
        a.predicted_steps > 3 * b.predicted_steps,
        "good group predicted {} steps, bad group {}",
        a.predicted_steps,
        b.predicted_steps
    );
    assert!(
        mixed > 20,
        "only {mixed} steps computed one group and not the other"
    );
    // Backward work in group-steps: each group's backward steps added up.
    assert_eq!(s.group_backward_steps(), a.full_steps + b.full_steps);
    assert_eq!(s.backward_steps() + s.predicted_steps(), 120);
    assert!(s.backward_steps() >= b.full_steps);
}

#[test]
fn misuse_leaves_the_state_unchanged_and_resume_continues() {
    let mut s = GroupedScheduler::new(small(), &names(&["a", "b"])).unwrap();
    let snap = |s: &GroupedScheduler| serde_json::to_string(s).unwrap();
    let before = snap(&s);
    assert!(matches!(
        s.end_step(1.0),
        Err(Error::NoStepInProgress { .. })
    ));
    assert!(s.end_step_without_loss().is_err());
    assert_eq!(snap(&s), before);
    s.begin_step().unwrap();
    let during = snap(&s);
    assert!(matches!(s.begin_step(), Err(Error::StepInProgress { .. })));
    // Warmup needs a loss; group 2 does not exist; a NaN report is refused.
    assert!(matches!(
        s.end_step_without_loss(),
        Err(Error::LossRequired { .. })
    ));
    assert!(s.report_quality(2, GOOD).is_err());
    let nan = QualityReport {
        cosine: f32::NAN,
        relative_error: 0.1,
    };
    assert!(s.report_quality(0, nan).is_err());
    assert_eq!(snap(&s), during);
    s.end_step(1.0).unwrap();

    // A checkpoint taken at every step resumes identically.
    let mut reference = s.clone();
    for step in 0..60u64 {
        let restored: GroupedScheduler = serde_json::from_str(&snap(&s)).unwrap();
        assert_eq!(restored, s);
        let drive = |x: &mut GroupedScheduler| {
            let info = x.begin_step().unwrap();
            for i in 0..2 {
                if x.group_steps()[i].phase == DeterministicPhase::Correct {
                    x.report_quality(
                        i,
                        if (step + i as u64).is_multiple_of(3) {
                            BAD
                        } else {
                            GOOD
                        },
                    )
                    .unwrap();
                }
            }
            x.end_step(if info.needs_backward { 2.0 } else { 1.0 })
                .unwrap();
        };
        let mut resumed = restored;
        drive(&mut resumed);
        drive(&mut reference);
        assert_eq!(resumed, reference);
        s = resumed;
    }
    // A corrupted checkpoint is refused.
    let mut v: serde_json::Value = serde_json::from_str(&snap(&s)).unwrap();
    v["backward_steps"] = serde_json::json!(0);
    assert!(serde_json::from_value::<GroupedScheduler>(v.clone()).is_err());
    v["backward_steps"] = serde_json::json!(s.backward_steps());
    v["names"] = serde_json::json!(["b", "a"]);
    assert!(serde_json::from_value::<GroupedScheduler>(v).is_err());
}
