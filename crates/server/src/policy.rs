//! The access policy: one table of role × action × condition, evaluated on every request.
//!
//! [`POLICY`] is the whole policy; `docs/access.md` prints the same table and a test checks that
//! the two agree row for row, so the document cannot drift from the code. Anything the table does
//! not grant is denied.

use serde::Serialize;

/// A caller's role, from the token's role claim (see `docs/access.md`, "Claims").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// A patient: their own released results.
    Patient,
    /// A doctor: the exams they requested.
    Doctor,
    /// Clinic staff: upload, read, search, release.
    Staff,
    /// Administrators: staff rights plus holds, purge, shred.
    Admin,
    /// Auditors: the audit log only.
    Auditor,
    /// Machine clients (other services): upload and read.
    Service,
}

impl Role {
    /// Every role, in the order of the policy table.
    pub const ALL: [Role; 6] = [
        Role::Patient,
        Role::Doctor,
        Role::Staff,
        Role::Admin,
        Role::Auditor,
        Role::Service,
    ];

    /// The role's name in tokens and in `docs/access.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Staff => "staff",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    /// The role named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Create a document (its first version).
    Create,
    /// Add a version to a document.
    AddVersion,
    /// Read a document: content, versions, renditions, metadata.
    Read,
    /// List the documents of a patient.
    ListPatient,
    /// List the documents of an exam.
    ListExam,
    /// Full-text search.
    Search,
    /// Soft-delete a document.
    Delete,
    /// Undo a soft delete.
    Restore,
    /// Set or clear a legal hold or retention date.
    Hold,
    /// Permanently remove a deleted document.
    Purge,
    /// Crypto-shred a version.
    Shred,
    /// Release an exam's results to its patient.
    Release,
    /// Read the audit log.
    AuditRead,
    /// Create, list and revoke download links to a version.
    Share,
    /// Read one document's audit trail: who viewed, downloaded or changed it, and when (a
    /// patient's right under LGPD, art. 18, for their own results).
    History,
}

impl Action {
    /// Every action, in the order of the policy table.
    pub const ALL: [Action; 15] = [
        Action::Create,
        Action::AddVersion,
        Action::Read,
        Action::ListPatient,
        Action::ListExam,
        Action::Search,
        Action::Delete,
        Action::Restore,
        Action::Hold,
        Action::Purge,
        Action::Shred,
        Action::Release,
        Action::AuditRead,
        Action::Share,
        Action::History,
    ];

    /// The action's name in `docs/access.md` and in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::AddVersion => "add_version",
            Action::Read => "read",
            Action::ListPatient => "list_patient",
            Action::ListExam => "list_exam",
            Action::Search => "search",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Hold => "hold",
            Action::Purge => "purge",
            Action::Shred => "shred",
            Action::Release => "release",
            Action::AuditRead => "audit_read",
            Action::Share => "share",
            Action::History => "history",
        }
    }
}

/// When a rule grants its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// Whatever the resource.
    Always,
    /// The resource belongs to the caller's own patient binding and its exam is released.
    /// On lists and searches: results are narrowed to exactly those documents.
    OwnReleased,
    /// The resource's exam was requested by (assigned to) the calling doctor, or shared with
    /// them. On lists and searches: results are narrowed to those exams.
    Assigned,
}

impl Condition {
    /// The condition's name in `docs/access.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Always => "always",
            Condition::OwnReleased => "own_released",
            Condition::Assigned => "assigned",
        }
    }
}

/// One row of the policy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Who.
    pub role: Role,
    /// May do what.
    pub action: Action,
    /// On which resources.
    pub when: Condition,
}

const fn rule(role: Role, action: Action, when: Condition) -> Rule {
    Rule { role, action, when }
}

use Action as A;
use Condition as C;
use Role as R;

/// The policy. Not listed means denied.
pub const POLICY: &[Rule] = &[
    rule(R::Patient, A::Read, C::OwnReleased),
    rule(R::Patient, A::ListPatient, C::OwnReleased),
    rule(R::Patient, A::Search, C::OwnReleased),
    rule(R::Patient, A::Share, C::OwnReleased),
    rule(R::Patient, A::History, C::OwnReleased),
    rule(R::Doctor, A::Read, C::Assigned),
    rule(R::Doctor, A::ListPatient, C::Assigned),
    rule(R::Doctor, A::ListExam, C::Assigned),
    rule(R::Doctor, A::Search, C::Assigned),
    rule(R::Staff, A::Create, C::Always),
    rule(R::Staff, A::AddVersion, C::Always),
    rule(R::Staff, A::Read, C::Always),
    rule(R::Staff, A::ListPatient, C::Always),
    rule(R::Staff, A::ListExam, C::Always),
    rule(R::Staff, A::Search, C::Always),
    rule(R::Staff, A::Delete, C::Always),
    rule(R::Staff, A::Restore, C::Always),
    rule(R::Staff, A::Release, C::Always),
    rule(R::Staff, A::Share, C::Always),
    rule(R::Staff, A::History, C::Always),
    rule(R::Admin, A::Create, C::Always),
    rule(R::Admin, A::AddVersion, C::Always),
    rule(R::Admin, A::Read, C::Always),
    rule(R::Admin, A::ListPatient, C::Always),
    rule(R::Admin, A::ListExam, C::Always),
    rule(R::Admin, A::Search, C::Always),
    rule(R::Admin, A::Delete, C::Always),
    rule(R::Admin, A::Restore, C::Always),
    rule(R::Admin, A::Release, C::Always),
    rule(R::Admin, A::Share, C::Always),
    rule(R::Admin, A::Hold, C::Always),
    rule(R::Admin, A::Purge, C::Always),
    rule(R::Admin, A::Shred, C::Always),
    rule(R::Admin, A::History, C::Always),
    rule(R::Auditor, A::AuditRead, C::Always),
    rule(R::Auditor, A::History, C::Always),
    rule(R::Service, A::Create, C::Always),
    rule(R::Service, A::AddVersion, C::Always),
    rule(R::Service, A::Read, C::Always),
    rule(R::Service, A::ListPatient, C::Always),
    rule(R::Service, A::ListExam, C::Always),
];

/// An authenticated caller, as the token proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// The one role the token carries.
    pub role: Role,
    /// The patient the subject is, for patients (from the configured claim).
    pub patient_id: Option<String>,
}

impl Principal {
    /// The identity recorded by the library's audit (`role:subject`).
    pub fn identity(&self) -> docstore::Identity {
        docstore::Identity::new(format!("{}:{}", self.role.as_str(), self.subject))
    }
}

/// What the policy needs to know about one document (or exam).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The resource's patient.
    pub patient_id: String,
    /// Whether its exam is released to that patient.
    pub released: bool,
    /// Whether its exam is assigned to the calling doctor.
    pub assigned: bool,
}

/// The rule granting `action` to `role`, if any.
pub fn grant(role: Role, action: Action) -> Option<Condition> {
    POLICY
        .iter()
        .find(|r| r.role == role && r.action == action)
        .map(|r| r.when)
}

/// Whether `who` may do `action` on a resource with `facts`. Default deny.
pub fn allows(who: &Principal, action: Action, facts: &Facts) -> bool {
    match grant(who.role, action) {
        None => false,
        Some(Condition::Always) => true,
        Some(Condition::OwnReleased) => {
            facts.released && who.patient_id.as_deref() == Some(facts.patient_id.as_str())
        }
        Some(Condition::Assigned) => facts.assigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_action_pair_is_listed_twice() {
        for (i, a) in POLICY.iter().enumerate() {
            for b in &POLICY[i + 1..] {
                assert!(
                    !(a.role == b.role && a.action == b.action),
                    "{a:?} and {b:?} overlap"
                );
            }
        }
    }

    #[test]
    fn a_patient_needs_both_ownership_and_release() {
        let p = Principal {
            subject: "u".into(),
            role: Role::Patient,
            patient_id: Some("p-1".into()),
        };
        let facts = |patient: &str, released| Facts {
            patient_id: patient.into(),
            released,
            assigned: true,
        };
        assert!(allows(&p, Action::Read, &facts("p-1", true)));
        assert!(!allows(&p, Action::Read, &facts("p-1", false)));
        assert!(!allows(&p, Action::Read, &facts("p-2", true)));
        let unbound = Principal {
            patient_id: None,
            ..p.clone()
        };
        assert!(!allows(&unbound, Action::Read, &facts("p-1", true)));
        assert!(!allows(&p, Action::Create, &facts("p-1", true)));
    }
}
