//! The small reports a node sends about itself, as the controller reads them:
//! `CandidateReport::decode` (`PUT /v1/candidates/NODE`) and `PathReport::decode`
//! (`PUT /v1/paths/NODE`). The first input byte picks which.
//!
//! Beyond "never panics": whatever decodes is within its bounds (candidate count, a usable
//! address each, a non-zero port; each path count; the cut-offs' number, peers and times),
//! and re-encoding it decodes to the same report.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtun_proto::candidates::{unusable, CandidateReport, MAX_REPORTED};
use meshtun_proto::paths::{PathReport, MAX_COUNT, MAX_CUTOFFS, MAX_CUTOFF_MS};
use meshtun_proto::wire::valid_node_id;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(report) = CandidateReport::decode(rest) {
            assert!(report.candidates.len() <= MAX_REPORTED);
            assert_ne!(report.listen_port, 0);
            assert!(report.candidates.iter().all(|c| unusable(c).is_none()));
            let again = serde_json::to_vec(&report).expect("a report encodes");
            assert_eq!(CandidateReport::decode(&again).expect("re-encoded decodes"), report);
        }
    } else if let Ok(report) = PathReport::decode(rest) {
        for count in [report.direct, report.relayed, report.trying, report.none] {
            assert!(count <= MAX_COUNT);
        }
        assert!(report.cutoffs.len() <= MAX_CUTOFFS);
        for cutoff in &report.cutoffs {
            assert!(cutoff.ms <= MAX_CUTOFF_MS);
            assert!(valid_node_id(&cutoff.peer));
        }
        let again = serde_json::to_vec(&report).expect("a report encodes");
        assert_eq!(PathReport::decode(&again).expect("re-encoded decodes"), report);
    }
});
