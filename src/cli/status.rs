//! `quorate status NAME`.

use super::nodes::Nodes;
use super::report::{Output, Report};
use super::state::ResourceKeys;
use super::{Outcome, Status};

pub(super) async fn run(nodes: &Nodes, name: &str, out: Output) -> Outcome {
    let keys = ResourceKeys::new(&nodes.key_prefix, name)?;
    let report = Report::read(nodes, name, &keys).await;
    out.print(&report, || report.text());
    verdict(nodes, &report)
}

/// The exit status of a report: unreachable before absent, since the nodes
/// that did not answer may hold it.
pub(super) fn verdict(nodes: &Nodes, report: &Report) -> Outcome {
    nodes.enough(report.answered())?;
    Ok(if report.found() {
        Status::Ok
    } else {
        Status::Absent
    })
}
