//! Page sessions: a server-side store bounded in size, the signed-in user, CSRF tokens.
//!
//! The cookie (`docstore_session`) carries only a random id (tower-sessions); what it stands for
//! lives here: in memory on one server, in PostgreSQL when servers share the access database. Sessions end after [`IDLE`] without a request, after [`ABSOLUTE`] in
//! any case, and at logout (the record is deleted, so an old cookie is worth nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Session, SessionStore, session_store};

use crate::policy::{Principal, Role};

/// The session cookie's name.
pub const COOKIE: &str = "docstore_session";
/// A session ends after this long without a request.
pub const IDLE: time::Duration = time::Duration::minutes(30);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: time::Duration = time::Duration::hours(12);
/// The request header that carries the CSRF token of a script's unsafe request.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Most sessions held at once; past it the ones closest to expiry make room.
const MAX_SESSIONS: usize = 100_000;

const USER: &str = "user";
const CSRF: &str = "csrf";

/// Sessions in memory, at most [`MAX_SESSIONS`]: expired ones are dropped when room is needed,
/// then the ones that would expire first. A flood of anonymous visits therefore costs bounded
/// memory (and at worst signs out the longest-idle users).
#[derive(Debug, Default, Clone)]
pub struct BoundedStore {
    records: Arc<Mutex<HashMap<Id, Record>>>,
}

impl BoundedStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Id, Record>) -> T) -> T {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Sessions held (expired ones included until room is needed).
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn make_room(m: &mut HashMap<Id, Record>) {
    if m.len() < MAX_SESSIONS {
        return;
    }
    let now = OffsetDateTime::now_utc();
    m.retain(|_, r| r.expiry_date > now);
    if m.len() >= MAX_SESSIONS {
        let mut by_expiry: Vec<(OffsetDateTime, Id)> = m.iter().map(|(id, r)| (r.expiry_date, *id)).collect();
        by_expiry.sort_unstable_by_key(|(t, _)| *t);
        for (_, id) in by_expiry
            .iter()
            .take(m.len() - MAX_SESSIONS + MAX_SESSIONS / 100 + 1)
        {
            m.remove(id);
        }
    }
}

#[async_trait]
impl SessionStore for BoundedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.with(|m| {
            make_room(m);
            while m.contains_key(&record.id) {
                record.id = Id::default();
            }
            m.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.with(|m| {
            if !m.contains_key(&record.id) {
                make_room(m);
            }
            m.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.with(|m| m.get(id).filter(|r| r.expiry_date > now).cloned()))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.with(|m| m.remove(id));
        Ok(())
    }
}

/// Where page sessions live. One server keeps them in memory ([`BoundedStore`]); servers behind
/// one load balancer keep them in the access database's PostgreSQL (`tower_sessions.session`,
/// tower-sessions' own SQLx store), so a session signed in on one is valid on the others and a
/// logout on one ends it on all.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionBackend {
    /// In this process, bounded in count.
    Memory(BoundedStore),
    /// In PostgreSQL, shared by every server on the same access database.
    Postgres(tower_sessions_sqlx_store::PostgresStore),
}

impl SessionBackend {
    /// The PostgreSQL store at `url`, its table created if missing.
    pub async fn postgres(url: &str) -> Result<Self, sqlx::Error> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await?;
        let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
        store.migrate().await?;
        Ok(SessionBackend::Postgres(store))
    }

    /// Drops expired sessions (the memory store does so itself when it needs room).
    pub async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(_) => Ok(()),
            SessionBackend::Postgres(s) => {
                tower_sessions::session_store::ExpiredDeletion::delete_expired(s).await
            }
        }
    }
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(s) => s.create(record).await,
            SessionBackend::Postgres(s) => s.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(s) => s.save(record).await,
            SessionBackend::Postgres(s) => s.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            SessionBackend::Memory(s) => s.load(id).await,
            SessionBackend::Postgres(s) => s.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            SessionBackend::Memory(s) => s.delete(id).await,
            SessionBackend::Postgres(s) => s.delete(id).await,
        }
    }
}

/// Who signed in, as the session holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    /// Subject.
    pub sub: String,
    /// Role name.
    pub role: String,
    /// Patient binding.
    pub patient: Option<String>,
    /// Sign-in time, Unix seconds (the absolute timeout counts from it).
    pub since: i64,
}

impl SessionUser {
    /// The principal, if the session is still within its absolute lifetime.
    pub fn principal(&self) -> Option<Principal> {
        let age = OffsetDateTime::now_utc().unix_timestamp() - self.since;
        if !(0..ABSOLUTE.whole_seconds()).contains(&age) {
            return None;
        }
        Some(Principal {
            subject: self.sub.clone(),
            role: Role::parse(&self.role)?,
            patient_id: self.patient.clone(),
        })
    }
}

/// Why a session could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session store failed.
    #[error("session store")]
    Store(#[source] tower_sessions::session::Error),
}

fn random_token() -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    // The system generator does not fail on Linux; a session without a token refuses every form.
    SystemRandom::new().fill(&mut b).expect("system random generator");
    URL_SAFE_NO_PAD.encode(b)
}

/// The session's CSRF token, made on first use.
pub async fn csrf_token(session: &Session) -> Result<String, SessionError> {
    if let Some(t) = session.get::<String>(CSRF).await.map_err(SessionError::Store)? {
        return Ok(t);
    }
    let t = random_token();
    session.insert(CSRF, &t).await.map_err(SessionError::Store)?;
    Ok(t)
}

/// Whether `given` is the session's CSRF token (compared in constant time; a session without
/// one matches nothing).
pub async fn csrf_matches(session: &Session, given: &str) -> bool {
    match session.get::<String>(CSRF).await {
        Ok(Some(t)) => !given.is_empty() && bool::from(t.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    }
}

/// The signed-in user, if any (and within the absolute lifetime; past it the session is
/// ended here).
pub async fn signed_in(session: &Session) -> Result<Option<Principal>, SessionError> {
    let Some(user) = session
        .get::<SessionUser>(USER)
        .await
        .map_err(SessionError::Store)?
    else {
        return Ok(None);
    };
    match user.principal() {
        Some(p) => Ok(Some(p)),
        None => {
            session.flush().await.map_err(SessionError::Store)?;
            Ok(None)
        }
    }
}

/// Signs `who` in: a new session id (the pre-sign-in one is dropped, so a planted cookie is
/// worth nothing) and a new CSRF token.
pub async fn sign_in(session: &Session, who: &Principal) -> Result<(), SessionError> {
    session.cycle_id().await.map_err(SessionError::Store)?;
    let user = SessionUser {
        sub: who.subject.clone(),
        role: who.role.as_str().to_owned(),
        patient: who.patient_id.clone(),
        since: OffsetDateTime::now_utc().unix_timestamp(),
    };
    session.insert(USER, user).await.map_err(SessionError::Store)?;
    session
        .insert(CSRF, random_token())
        .await
        .map_err(SessionError::Store)?;
    Ok(())
}

/// Signs out: the record is deleted and the cookie cleared.
pub async fn sign_out(session: &Session) -> Result<(), SessionError> {
    session.flush().await.map_err(SessionError::Store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_stays_bounded_and_drops_the_soonest_to_expire() {
        let store = BoundedStore::default();
        let now = OffsetDateTime::now_utc();
        let mut first = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: now + time::Duration::minutes(1),
        };
        store.create(&mut first).await.unwrap();
        for i in 0..MAX_SESSIONS + 10 {
            let mut r = Record {
                id: Id::default(),
                data: Default::default(),
                expiry_date: now + time::Duration::minutes(10) + time::Duration::seconds(i as i64),
            };
            store.create(&mut r).await.unwrap();
        }
        assert!(store.len() <= MAX_SESSIONS, "{} sessions held", store.len());
        assert!(
            store.load(&first.id).await.unwrap().is_none(),
            "the soonest to expire went first"
        );
    }

    #[tokio::test]
    async fn expired_records_do_not_load() {
        let store = BoundedStore::default();
        let mut r = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() - time::Duration::seconds(1),
        };
        store.create(&mut r).await.unwrap();
        assert!(store.load(&r.id).await.unwrap().is_none());
    }

    #[test]
    fn the_absolute_lifetime_ends_a_session() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let user = |since| SessionUser {
            sub: "ana".into(),
            role: "staff".into(),
            patient: None,
            since,
        };
        assert!(user(now - 60).principal().is_some());
        assert!(user(now - ABSOLUTE.whole_seconds()).principal().is_none());
        assert!(
            user(now + 3600).principal().is_none(),
            "a sign-in in the future is refused"
        );
        assert!(
            SessionUser {
                role: "root".into(),
                ..user(now)
            }
            .principal()
            .is_none()
        );
    }
}
