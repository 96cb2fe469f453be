//! The README documents the log API: every termination code and every
//! access-record field. Fails when one is added without documentation.

use usher_core::Termination;

const README: &str = include_str!("../../../README.md");
const ACCESS_RS: &str = include_str!("../src/session/access.rs");

#[test]
fn every_termination_code_is_documented() {
    for (_, code, _) in Termination::TABLE {
        assert!(README.contains(&format!("`{code}`")), "README lacks termination code {code}");
    }
}

#[test]
fn every_access_record_field_is_documented() {
    let start = ACCESS_RS.find("info!(log, \"session\";").expect("access record macro");
    let body = &ACCESS_RS[start..];
    let body = &body[..body.find(");").expect("end of macro")];
    let fields: Vec<&str> = body.lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
    assert!(fields.len() >= 14, "parsed fields: {fields:?}");
    for field in fields {
        assert!(README.contains(&format!("`{field}`")), "README lacks access-record field {field}");
    }
}
