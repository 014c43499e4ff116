//! What the policy needs beyond the documents themselves: which exams are released to their
//! patient, and which doctor requested which exam. Fed by the exam service's events
//! (`exam.created`, `exam.updated`, `exam.result.ready`; see [`crate::exam_events`]) and by the
//! staff's release action.
//!
//! One SQL text serves SQLite (the embedded default, `DATA_DIR/server/access.sqlite`) and
//! PostgreSQL (the metadata database's own, tables prefixed `docstore_access_`), through sqlx's
//! `Any` driver: the statements are portable, so there is nothing to write twice.

use std::path::Path;

use docstore::Timestamp;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;

/// Why the access store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The database failed or could not be reached.
    #[error("access database")]
    Database(#[source] sqlx::Error),
    /// Creating the SQLite file.
    #[error("access database file")]
    Io(#[source] std::io::Error),
    /// An event or request names an exam of another patient than the one recorded.
    #[error("exam belongs to another patient")]
    PatientMismatch,
    /// The metadata store, which keeps the release time, failed.
    #[error("metadata store")]
    Metadata(#[source] docstore::Error),
}

impl AccessError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, AccessError::Database(_) | AccessError::Metadata(_))
    }
}

/// The access facts of one exam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExamAccess {
    /// Exam id.
    pub exam_id: String,
    /// The exam's patient.
    pub patient_id: String,
    /// When its results were released to the patient.
    pub released_at: Option<Timestamp>,
    /// Who released them (a user, or the exam service's event id).
    pub released_by: Option<String>,
    /// When the exam service reported the exam complete (`exam.completed`).
    pub completed_at: Option<Timestamp>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS docstore_access_exams (
        exam_id TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL,
        released_at BIGINT,
        released_by TEXT,
        updated_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS docstore_access_exams_patient
        ON docstore_access_exams (patient_id, released_at)",
    "CREATE TABLE IF NOT EXISTS docstore_access_doctors (
        exam_id TEXT NOT NULL,
        doctor TEXT NOT NULL,
        PRIMARY KEY (exam_id, doctor))",
    "CREATE INDEX IF NOT EXISTS docstore_access_doctors_by_doctor
        ON docstore_access_doctors (doctor, exam_id)",
    // A patient's (or staff's) share of one exam with a doctor who did not request it.
    "CREATE TABLE IF NOT EXISTS docstore_access_shares (
        exam_id TEXT NOT NULL,
        doctor TEXT NOT NULL,
        shared_by TEXT NOT NULL,
        shared_at BIGINT NOT NULL,
        PRIMARY KEY (exam_id, doctor))",
    "CREATE INDEX IF NOT EXISTS docstore_access_shares_by_doctor
        ON docstore_access_shares (doctor, exam_id)",
];

/// Columns added after a table's first release: (table, column, SQL type).
const COLUMNS_ADDED: &[(&str, &str, &str)] = &[
    ("docstore_access_links", "factor_kind", "TEXT"),
    ("docstore_access_links", "factor_tag", "TEXT"),
    ("docstore_access_links", "failures", "BIGINT NOT NULL DEFAULT 0"),
    ("docstore_access_exams", "completed_at", "BIGINT"),
];

/// Exam releases and doctor assignments.
#[derive(Debug, Clone)]
pub struct AccessStore {
    pool: AnyPool,
}

impl AccessStore {
    /// The embedded default: a SQLite file (0600) at `path`.
    pub async fn sqlite(path: &Path) -> Result<Self, AccessError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(AccessError::Io)?;
        }
        // Created 0600 before SQLite opens it, so the file is never readable by others.
        docstore::create_owner_only(path).map_err(AccessError::Io)?;
        Self::connect(&format!("sqlite://{}", path.display()), 4).await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`) and creates the tables if missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, AccessError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await
            .map_err(AccessError::Database)?;
        for stmt in SCHEMA.iter().chain([&LINK_SCHEMA]) {
            sqlx::query(stmt)
                .execute(&pool)
                .await
                .map_err(AccessError::Database)?;
        }
        // A database made before a column existed gets it; SQLite has no ADD COLUMN IF NOT
        // EXISTS, so probe each column with an empty select.
        for (table, column, ty) in COLUMNS_ADDED {
            let probe = format!("SELECT {column} FROM {table} WHERE 1 = 0");
            if sqlx::query(&probe).execute(&pool).await.is_err() {
                sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
                    .execute(&pool)
                    .await
                    .map_err(AccessError::Database)?;
            }
        }
        Ok(AccessStore { pool })
    }

    /// The exam's facts, if the exam is known.
    pub async fn exam(&self, exam_id: &str) -> Result<Option<ExamAccess>, AccessError> {
        let row = sqlx::query(
            "SELECT exam_id, patient_id, released_at, released_by, completed_at
             FROM docstore_access_exams WHERE exam_id = $1",
        )
        .bind(exam_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(row.map(|r| ExamAccess {
            exam_id: r.get(0),
            patient_id: r.get(1),
            released_at: r.get::<Option<i64>, _>(2).map(Timestamp),
            completed_at: r.get::<Option<i64>, _>(4).map(Timestamp),
            released_by: r.get(3),
        }))
    }

    /// Records an exam and its patient (idempotent). A known exam of another patient is refused.
    pub async fn record_exam(&self, exam_id: &str, patient_id: &str) -> Result<ExamAccess, AccessError> {
        sqlx::query(
            "INSERT INTO docstore_access_exams (exam_id, patient_id, updated_at)
             VALUES ($1, $2, $3) ON CONFLICT (exam_id) DO NOTHING",
        )
        .bind(exam_id)
        .bind(patient_id)
        .bind(Timestamp::now().0)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        let exam = self.exam(exam_id).await?.ok_or(AccessError::PatientMismatch)?;
        if exam.patient_id != patient_id {
            return Err(AccessError::PatientMismatch);
        }
        Ok(exam)
    }

    /// Assigns an exam to the doctor who requested it (idempotent).
    pub async fn assign(&self, exam_id: &str, doctor: &str) -> Result<(), AccessError> {
        sqlx::query(
            "INSERT INTO docstore_access_doctors (exam_id, doctor) VALUES ($1, $2)
             ON CONFLICT (exam_id, doctor) DO NOTHING",
        )
        .bind(exam_id)
        .bind(doctor)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(())
    }
    /// Releases an exam to its patient. The release is recorded first in the metadata store
    /// (`meta`), which keeps the first release's time on every backend and is what the stamp
    /// prints; this store then takes that time. Idempotent, and a retry after a failure between
    /// the two writes gives both the same time.
    pub async fn release(
        &self,
        meta: &dyn docstore::meta::MetadataStore,
        exam_id: &str,
        patient_id: &str,
        by: &str,
    ) -> Result<ExamAccess, AccessError> {
        // The patient check first, so a mismatched release is recorded nowhere.
        self.record_exam(exam_id, patient_id).await?;
        let asked = docstore::ExamRelease {
            exam_id: exam_id.to_owned(),
            patient_id: patient_id.to_owned(),
            released_at: Timestamp::now(),
            released_by: by.to_owned(),
        };
        let recorded = meta.record_release(&asked).await.map_err(|e| match e {
            docstore::Error::InvalidInput(_) => AccessError::PatientMismatch,
            other => AccessError::Metadata(other),
        })?;
        sqlx::query(
            "UPDATE docstore_access_exams SET released_at = $1, released_by = $2, updated_at = $1
             WHERE exam_id = $3 AND released_at IS NULL",
        )
        .bind(recorded.released_at.0)
        .bind(&recorded.released_by)
        .bind(exam_id)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        self.exam(exam_id).await?.ok_or(AccessError::PatientMismatch)
    }

    /// Marks an exam complete (`exam.completed`). Idempotent: the first completion time stays.
    pub async fn complete(&self, exam_id: &str, patient_id: &str) -> Result<ExamAccess, AccessError> {
        self.record_exam(exam_id, patient_id).await?;
        sqlx::query(
            "UPDATE docstore_access_exams SET completed_at = $1, updated_at = $1
             WHERE exam_id = $2 AND completed_at IS NULL",
        )
        .bind(Timestamp::now().0)
        .bind(exam_id)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        self.exam(exam_id).await?.ok_or(AccessError::PatientMismatch)
    }

    /// Whether `doctor` requested `exam_id` or it was shared with them.
    pub async fn is_assigned(&self, exam_id: &str, doctor: &str) -> Result<bool, AccessError> {
        let row = sqlx::query(
            "SELECT 1 FROM docstore_access_doctors WHERE exam_id = $1 AND doctor = $2
             UNION ALL SELECT 1 FROM docstore_access_shares WHERE exam_id = $1 AND doctor = $2",
        )
        .bind(exam_id)
        .bind(doctor)
        .fetch_optional(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(row.is_some())
    }

    /// Shares an exam with a doctor (idempotent: the first share's author and time stay).
    pub async fn share(&self, exam_id: &str, doctor: &str, by: &str) -> Result<(), AccessError> {
        sqlx::query(
            "INSERT INTO docstore_access_shares (exam_id, doctor, shared_by, shared_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (exam_id, doctor) DO NOTHING",
        )
        .bind(exam_id)
        .bind(doctor)
        .bind(by)
        .bind(Timestamp::now().0)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(())
    }

    /// Ends a share; `false` if there was none. A doctor who requested the exam keeps it.
    pub async fn unshare(&self, exam_id: &str, doctor: &str) -> Result<bool, AccessError> {
        let done = sqlx::query("DELETE FROM docstore_access_shares WHERE exam_id = $1 AND doctor = $2")
            .bind(exam_id)
            .bind(doctor)
            .execute(&self.pool)
            .await
            .map_err(AccessError::Database)?;
        Ok(done.rows_affected() > 0)
    }

    /// The shares of an exam, by doctor.
    pub async fn shares_of(&self, exam_id: &str) -> Result<Vec<ShareRecord>, AccessError> {
        let rows = sqlx::query(
            "SELECT doctor, shared_by, shared_at FROM docstore_access_shares
             WHERE exam_id = $1 ORDER BY doctor",
        )
        .bind(exam_id)
        .fetch_all(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(rows
            .iter()
            .map(|r| ShareRecord {
                exam_id: exam_id.to_owned(),
                doctor: r.get(0),
                shared_by: r.get(1),
                shared_at: Timestamp(r.get(2)),
            })
            .collect())
    }

    /// The released exams of a patient.
    pub async fn released_exams(&self, patient_id: &str) -> Result<Vec<String>, AccessError> {
        let rows = sqlx::query(
            "SELECT exam_id FROM docstore_access_exams
             WHERE patient_id = $1 AND released_at IS NOT NULL ORDER BY exam_id",
        )
        .bind(patient_id)
        .fetch_all(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The exams a doctor requested or was shared, each once.
    pub async fn assigned_exams(&self, doctor: &str) -> Result<Vec<String>, AccessError> {
        let rows = sqlx::query(
            "SELECT exam_id FROM docstore_access_doctors WHERE doctor = $1
             UNION SELECT exam_id FROM docstore_access_shares WHERE doctor = $1 ORDER BY 1",
        )
        .bind(doctor)
        .fetch_all(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// One exam shared with a doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// Exam.
    pub exam_id: String,
    /// The doctor (their token's subject).
    pub doctor: String,
    /// Who shared it (`role:subject`).
    pub shared_by: String,
    /// When.
    pub shared_at: Timestamp,
}

/// A download link's record (the capability itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkRecord {
    /// Link id.
    pub link_id: String,
    /// Document.
    pub document_id: String,
    /// The one version it serves.
    pub version: u64,
    /// Who made it (`role:subject`).
    pub created_by: String,
    /// For whom (free text the creator gave, e.g. a doctor's name).
    pub label: Option<String>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
    /// Uses allowed.
    pub max_uses: u64,
    /// Uses so far.
    pub uses: u64,
    /// Revocation time, ms.
    pub revoked_at: Option<i64>,
    /// The second factor the link asks for: `date_of_birth` or `one_time_code`.
    pub factor_kind: Option<String>,
    /// HMAC of the expected answer under the link key, hex (never the answer itself).
    #[serde(skip)]
    pub factor_tag: Option<String>,
    /// Wrong answers so far; at [`MAX_FACTOR_FAILURES`] the link is locked.
    pub failures: u64,
}

/// Wrong second-factor answers after which a link is locked for good.
pub const MAX_FACTOR_FAILURES: u64 = 5;

const LINK_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS docstore_access_links (
    link_id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_uses BIGINT NOT NULL,
    uses BIGINT NOT NULL,
    revoked_at BIGINT)";

const LINK_COLUMNS: &str = "link_id, document_id, version, created_by, label, created_at, expires_at, \
     max_uses, uses, revoked_at, factor_kind, factor_tag, failures";

fn link_row(r: &sqlx::any::AnyRow) -> LinkRecord {
    LinkRecord {
        link_id: r.get(0),
        document_id: r.get(1),
        version: r.get::<i64, _>(2) as u64,
        created_by: r.get(3),
        label: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        max_uses: r.get::<i64, _>(7) as u64,
        uses: r.get::<i64, _>(8) as u64,
        revoked_at: r.get(9),
        factor_kind: r.get(10),
        factor_tag: r.get(11),
        failures: r.get::<i64, _>(12) as u64,
    }
}

impl AccessStore {
    /// Records a new link.
    pub async fn create_link(&self, link: &LinkRecord) -> Result<(), AccessError> {
        sqlx::query(&format!(
            "INSERT INTO docstore_access_links ({LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, $9, $10, 0)"
        ))
        .bind(&link.link_id)
        .bind(&link.document_id)
        .bind(link.version as i64)
        .bind(&link.created_by)
        .bind(link.label.as_deref())
        .bind(link.created_at)
        .bind(link.expires_at)
        .bind(link.max_uses as i64)
        .bind(link.factor_kind.as_deref())
        .bind(link.factor_tag.as_deref())
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(())
    }

    /// One link.
    pub async fn link(&self, link_id: &str) -> Result<Option<LinkRecord>, AccessError> {
        let row = sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM docstore_access_links WHERE link_id = $1"
        ))
        .bind(link_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(row.as_ref().map(link_row))
    }

    /// The links of a document, newest first.
    pub async fn links_of(&self, document_id: &str) -> Result<Vec<LinkRecord>, AccessError> {
        let rows = sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM docstore_access_links WHERE document_id = $1 ORDER BY created_at DESC, link_id"
        ))
        .bind(document_id)
        .fetch_all(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(rows.iter().map(link_row).collect())
    }

    /// Takes one use of a link, in one conditional write: only while it is unrevoked, unexpired
    /// and under its use limit. `false`: refused (concurrent uses never exceed the limit).
    pub async fn use_link(&self, link_id: &str, now: i64) -> Result<bool, AccessError> {
        let done = sqlx::query(
            "UPDATE docstore_access_links SET uses = uses + 1
             WHERE link_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < max_uses",
        )
        .bind(link_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes one of a link's second-factor tries before the answer is checked, in one
    /// conditional write, so concurrent guesses never exceed [`MAX_FACTOR_FAILURES`] in all.
    /// `false`: the link is locked.
    pub async fn take_factor_try(&self, link_id: &str) -> Result<bool, AccessError> {
        let done = sqlx::query(
            "UPDATE docstore_access_links SET failures = failures + 1
             WHERE link_id = $1 AND failures < $2",
        )
        .bind(link_id)
        .bind(MAX_FACTOR_FAILURES as i64)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back the try a right answer took (wrong answers keep theirs).
    pub async fn return_factor_try(&self, link_id: &str) -> Result<(), AccessError> {
        sqlx::query(
            "UPDATE docstore_access_links SET failures = failures - 1
             WHERE link_id = $1 AND failures > 0",
        )
        .bind(link_id)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(())
    }

    /// Revokes a link (idempotent).
    pub async fn revoke_link(&self, link_id: &str, now: i64) -> Result<(), AccessError> {
        sqlx::query(
            "UPDATE docstore_access_links SET revoked_at = $2 WHERE link_id = $1 AND revoked_at IS NULL",
        )
        .bind(link_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(AccessError::Database)?;
        Ok(())
    }
}
