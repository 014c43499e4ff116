//! Per-identity download rate limit (GCRA, `governor`): a client past its quota gets 429 with
//! `Retry-After`, so one identity cannot monopolise decryption.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::problem::ApiError;

/// Downloads per identity per minute, with a burst of the same size.
#[derive(Clone)]
pub struct DownloadLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for DownloadLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadLimiter").finish_non_exhaustive()
    }
}

impl DownloadLimiter {
    /// `per_minute` downloads per identity (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        DownloadLimiter {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one download for `identity`, or says how long to wait.
    pub fn check(&self, identity: &str) -> Result<(), ApiError> {
        // Forget identities whose buckets are full again, so memory follows active clients.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&identity.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::TooManyRequests(wait.as_secs().max(1))
        })
    }
}
