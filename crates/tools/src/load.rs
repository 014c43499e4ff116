//! A day of exams pushed through the whole pipeline and measured (`docstore load`).
//!
//! Each exam is a synthetic Portuguese lab report (printpdf, two to three pages by default) and
//! exam images (12 megapixels by default). Everything is generated first (not timed), then
//! uploaded with bounded concurrency while the pipeline ([`LocalPipeline`] on the given bus:
//! relay, stamp, thumbnail, text, index) runs, until every document is searchable. Measured:
//! exams/s over the whole run, each stage's latency percentiles, time from upload to searchable,
//! CPU time and peak memory of this process during the run, and every error.
//!
//! Images are generated `distinct_images` at a time and reused across exams (encoding a 12 MP
//! JPEG costs more than processing one); each upload is still its own version with its own key.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::{DocStore, ExamId, Identity, Kind, PatientId, ProcessingState, PutRequest};
use futures::StreamExt;
use serde::Serialize;

use crate::local::{LocalConfig, LocalPipeline};
use crate::synthetic::Generator;
use docstore_bus::EventBus;
use docstore_search::{SearchError, SearchIndex};

/// What to push.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Exams in the day.
    pub exams: usize,
    /// Images per exam.
    pub images_per_exam: usize,
    /// Image size, px.
    pub image_size: (u32, u32),
    /// Distinct images generated (reused round-robin).
    pub distinct_images: usize,
    /// Exams per report (two fit a page).
    pub exams_per_report: RangeInclusive<usize>,
    /// Uploads in flight at once.
    pub upload_concurrency: usize,
    /// Exams per second the uploads are paced at (exam `i`'s documents start no earlier than
    /// `i / rate` seconds into the run), to measure time to searchable at a steady arrival rate
    /// instead of a backlog; `None` uploads as fast as `upload_concurrency` allows.
    pub rate: Option<f64>,
    /// Seed of the generator.
    pub seed: u64,
    /// Clinic name (stamps, index).
    pub clinic: String,
    /// Partitions of the in-process bus (ignored on Kafka, whose topics have their own).
    pub partitions: u32,
    /// Longest the run may take.
    pub timeout: Duration,
    /// Also write the generated documents here (untimed), for the peers' shell pipeline.
    pub export: Option<std::path::PathBuf>,
}

impl Default for LoadPlan {
    fn default() -> Self {
        LoadPlan {
            exams: 1_000,
            images_per_exam: 1,
            image_size: (4032, 3024),
            distinct_images: 8,
            exams_per_report: 3..=6,
            upload_concurrency: 8,
            rate: None,
            seed: 2026,
            clinic: "Clínica São Lucas".into(),
            partitions: 4,
            timeout: Duration::from_secs(1800),
            export: None,
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy)]
pub enum LoadProgress {
    /// Documents generated of the total.
    Generated(usize, usize),
    /// Documents uploaded and searchable, of the total.
    Running {
        /// Uploaded so far.
        uploaded: usize,
        /// Searchable so far.
        searchable: usize,
        /// Failed (dead-lettered) so far.
        failed: usize,
        /// Documents in the run.
        total: usize,
    },
}

/// Percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Millis {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Millis {
    fn of(mut v: Vec<f64>) -> Millis {
        if v.is_empty() {
            return Millis::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Millis {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// One stage's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageFigures {
    /// Events handled.
    pub processed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Retries.
    pub retried: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Latency of successful attempts.
    pub latency_ms: Millis,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Exams pushed.
    pub exams: usize,
    /// Reports uploaded.
    pub reports: usize,
    /// Images uploaded.
    pub images: usize,
    /// Plaintext bytes uploaded.
    pub bytes: u64,
    /// Generating the documents (not part of the run).
    pub generate_seconds: f64,
    /// First upload to last upload.
    pub upload_seconds: f64,
    /// First upload to the last document searchable (or failed).
    pub wall_seconds: f64,
    /// Exams over `wall_seconds`.
    pub exams_per_second: f64,
    /// From a document's upload to it being found by search.
    pub time_to_searchable_ms: Millis,
    /// Per stage (`stamp`, `thumbnail`, `text`, `index`).
    pub stages: BTreeMap<String, StageFigures>,
    /// User + system CPU of this process during the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds / wall_seconds`: cores kept busy on average.
    pub cores_busy: f64,
    /// Peak resident memory of this process during the run, MiB (from generation on where the
    /// kernel cannot reset the peak).
    pub peak_rss_mib: u64,
    /// Search latency once the day is in: [`SEARCH_MIX`] over the index as the run left it,
    /// after the pipeline stopped (ten passes, each query timed).
    pub search_ms: Millis,
    /// Size of the index directory after the run, bytes (set by the caller, which knows it).
    pub index_bytes: u64,
    /// Documents that did not become searchable (dead-lettered), with the stage state.
    pub failed_documents: usize,
    /// Upload errors and failed documents, by id (no content).
    pub errors: Vec<String>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The store failed (typed; see the source).
    #[error(transparent)]
    Store(#[from] docstore::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] SearchError),
    /// Not done within the plan's timeout.
    #[error("{searchable} of {total} documents searchable after {after:?}")]
    TimedOut {
        /// Searchable when time ran out.
        searchable: usize,
        /// In the run.
        total: usize,
        /// The timeout.
        after: Duration,
    },
}

struct Upload {
    request: PutRequest,
    body: Arc<Vec<u8>>,
}

/// The queries a load run times at its end: words of the synthetic reports, common and rare,
/// plurals, a phrase and an AND (the search bench's mix, shortened).
pub const SEARCH_MIX: &[&str] = &[
    "hemoglobina",
    "creatinina",
    "glicoses",
    "\"colesterol total\"",
    "ureia creatinina",
    "leucócitos hemácias",
    "paciente",
];

/// Times [`SEARCH_MIX`] on `index`: one untimed pass, then ten timed ones.
fn time_searches(index: &SearchIndex) -> Result<Vec<f64>, SearchError> {
    index.refresh()?;
    let mut times = Vec::with_capacity(10 * SEARCH_MIX.len());
    for pass in 0..11 {
        for q in SEARCH_MIX {
            let t = Instant::now();
            index.search(&docstore_search::SearchQuery::new(*q))?;
            if pass > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times)
}

/// Consecutive pending documents found not searchable after which a pass stops looking.
const SEARCHABLE_MISS_RUN: usize = 256;

/// Runs `plan` on `store`, `index` and `bus`, reporting progress to `progress`.
pub async fn run(
    store: Arc<DocStore>,
    index: Arc<SearchIndex>,
    bus: Arc<dyn EventBus>,
    plan: &LoadPlan,
    progress: impl Fn(LoadProgress),
) -> Result<LoadReport, LoadError> {
    let generating = Instant::now();
    let uploads = generate(plan, &progress).await?;
    if let Some(dir) = &plan.export {
        export(dir, &uploads).map_err(|e| docstore::Error::io(dir.display().to_string(), e))?;
    }
    let generate_seconds = generating.elapsed().as_secs_f64();
    let total = uploads.len();
    let mut report = LoadReport {
        exams: plan.exams,
        reports: plan.exams,
        images: plan.exams * plan.images_per_exam,
        bytes: uploads.iter().map(|u| u.body.len() as u64).sum(),
        generate_seconds,
        ..LoadReport::default()
    };

    let pipeline = LocalPipeline::start_on(
        bus,
        store.clone(),
        index.clone(),
        LocalConfig {
            clinic: plan.clinic.clone(),
            partitions: plan.partitions,
            ..LocalConfig::default()
        },
    );
    reset_peak_rss();
    let cpu_before = cpu_seconds();
    let started = Instant::now();

    // Uploads run beside the poll loop below and hand each committed document over.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(String, Instant), String>>();
    let uploader = {
        let store = store.clone();
        let concurrency = plan.upload_concurrency.max(1);
        // Uploads come exam by exam: the report, then its images.
        let per_exam = 1 + plan.images_per_exam;
        let pace = plan.rate.filter(|r| r.is_finite() && *r > 0.0);
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            let who = Identity::new("load:reception");
            futures::stream::iter(uploads.into_iter().enumerate())
                .for_each_concurrent(concurrency, |(i, u)| {
                    let (store, who, tx) = (store.clone(), who.clone(), tx.clone());
                    async move {
                        if let Some(rate) = pace {
                            let due = Duration::from_secs_f64((i / per_exam) as f64 / rate);
                            tokio::time::sleep_until(start + due).await;
                        }
                        let sent = match store.put(&who, u.request, &u.body[..]).await {
                            Ok(v) => Ok((v.document_id, Instant::now())),
                            Err(e) => Err(format!("upload: {e}")),
                        };
                        let _ = tx.send(sent);
                    }
                })
                .await;
            Instant::now()
        })
    };

    let mut pending: VecDeque<(String, Instant)> = VecDeque::new();
    let (mut uploaded, mut searchable, mut to_searchable) = (0usize, Vec::new(), Vec::new());
    let (mut failed, mut upload_errors) = (0usize, 0usize);
    let mut last_len = index.len();
    let mut last_state_check = Instant::now();
    while uploaded + upload_errors < total || !pending.is_empty() {
        while let Ok(sent) = rx.try_recv() {
            match sent {
                Ok(doc) => {
                    uploaded += 1;
                    pending.push_back(doc);
                }
                Err(e) => {
                    upload_errors += 1;
                    report.errors.push(e);
                }
            }
        }
        let len = index.len();
        if len != last_len {
            last_len = len;
            // Documents become searchable about in upload order: look from the oldest and stop
            // after a run of misses, so that a backlog of N documents is not N lookups per
            // commit (that made the run's own CPU per exam grow with the day's size).
            let mut still = VecDeque::with_capacity(pending.len());
            let mut misses = 0;
            while let Some((id, at)) = pending.pop_front() {
                if misses < SEARCHABLE_MISS_RUN && index.contains(&id)? {
                    misses = 0;
                    to_searchable.push(at.elapsed().as_secs_f64() * 1e3);
                    searchable.push(id);
                } else {
                    misses += 1;
                    still.push_back((id, at));
                }
            }
            pending = still;
        }
        // A dead-lettered document never becomes searchable: look for those now and then, while
        // the stages have dead-lettered more than the failed documents found (one query per
        // pending document, so not on every pass of a healthy run).
        let dead = || -> u64 {
            pipeline
                .metrics()
                .iter()
                .map(|(_, m)| m.dead_lettered.get())
                .sum()
        };
        if last_state_check.elapsed() > Duration::from_secs(2)
            && !pending.is_empty()
            && dead() > failed as u64
        {
            last_state_check = Instant::now();
            let mut still = VecDeque::with_capacity(pending.len());
            for (id, at) in pending.drain(..) {
                let stuck = at.elapsed() > Duration::from_secs(5)
                    && store.metadata().version(&id, Some(1)).await?.state == ProcessingState::Failed;
                if stuck {
                    failed += 1;
                    report
                        .errors
                        .push(format!("{id}: a stage failed (see the dead-letter topic)"));
                } else {
                    still.push_back((id, at));
                }
            }
            pending = still;
        }
        progress(LoadProgress::Running {
            uploaded,
            searchable: searchable.len(),
            failed,
            total,
        });
        if started.elapsed() > plan.timeout {
            pipeline.stop().await;
            return Err(LoadError::TimedOut {
                searchable: searchable.len(),
                total,
                after: plan.timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let uploads_done = uploader.await.unwrap_or_else(|_| Instant::now());
    report.upload_seconds = uploads_done.saturating_duration_since(started).as_secs_f64();
    report.wall_seconds = wall;
    report.exams_per_second = plan.exams as f64 / wall;
    report.time_to_searchable_ms = Millis::of(to_searchable);
    report.cpu_seconds = cpu_seconds() - cpu_before;
    report.cores_busy = report.cpu_seconds / wall;
    report.peak_rss_mib = peak_rss_mib();
    report.failed_documents = failed;
    for (name, m) in pipeline.metrics() {
        let q = m.latency_quantiles(&[0.5, 0.95, 0.99, 1.0]).unwrap_or_default();
        let ms = |i: usize| q.get(i).copied().unwrap_or_default() * 1e3;
        report.stages.insert(
            name.clone(),
            StageFigures {
                processed: m.processed.get(),
                failed: m.failed.get(),
                retried: m.retried.get(),
                dead_lettered: m.dead_lettered.get(),
                latency_ms: Millis {
                    p50: ms(0),
                    p95: ms(1),
                    p99: ms(2),
                    max: ms(3),
                },
            },
        );
    }
    pipeline.stop().await;
    let ix = index.clone();
    let times = tokio::task::spawn_blocking(move || time_searches(&ix))
        .await
        .map_err(|e| SearchError::Index(format!("search task: {e}")))??;
    report.search_ms = Millis::of(times);
    Ok(report)
}

/// Every upload of the run: per exam a report, then its images (sharing its patient and exam).
async fn generate(plan: &LoadPlan, progress: &impl Fn(LoadProgress)) -> docstore::Result<Vec<Upload>> {
    let total = plan.exams * (1 + plan.images_per_exam);
    let (w, h) = plan.image_size;
    let distinct = if plan.images_per_exam == 0 {
        0
    } else {
        plan.distinct_images.clamp(1, plan.exams * plan.images_per_exam)
    };
    // Images are the slow part of generating: encode them on blocking threads, in parallel.
    let mut jobs = Vec::new();
    for i in 0..distinct {
        let seed = plan.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9);
        jobs.push(tokio::task::spawn_blocking(move || {
            Generator::new(seed, "", 1).image(w, h).2
        }));
    }
    let mut images = Vec::with_capacity(distinct);
    for j in jobs {
        images.push(Arc::new(j.await.unwrap_or_default()));
        progress(LoadProgress::Generated(images.len(), total));
    }
    let mut g = Generator::new(plan.seed, plan.clinic.clone(), (plan.exams / 3).max(5))
        .with_exams_per_report(plan.exams_per_report.clone());
    let mut out = Vec::with_capacity(total);
    for e in 0..plan.exams {
        let r = g.report();
        let (patient, exam) = (PatientId::new(r.patient_id)?, ExamId::new(r.exam_id)?);
        for k in 0..plan.images_per_exam {
            out.push(Upload {
                request: PutRequest::new(patient.clone(), exam.clone())
                    .kind(Kind::Image)
                    .media_type("image/jpeg"),
                body: images[(e * plan.images_per_exam + k) % distinct].clone(),
            });
        }
        out.push(Upload {
            request: PutRequest::new(patient, exam),
            body: Arc::new(r.pdf),
        });
        progress(LoadProgress::Generated(distinct + out.len(), total + distinct));
    }
    // Reports and images interleaved, as a day's uploads arrive.
    Ok(out)
}

/// Writes each upload as `<exam>-<n>.pdf|jpg` (n counts the exam's documents).
fn export(dir: &std::path::Path, uploads: &[Upload]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for u in uploads {
        let n = seen.entry(u.request.exam_id.as_str()).or_default();
        *n += 1;
        let ext = if u.request.kind == Kind::Report {
            "pdf"
        } else {
            "jpg"
        };
        std::fs::write(dir.join(format!("{}-{n}.{ext}", u.request.exam_id)), &u.body[..])?;
    }
    Ok(())
}

/// User + system CPU time of this process, seconds (`/proc/self/stat`, in USER_HZ = 100 ticks,
/// fixed by the kernel ABI); 0 where there is no procfs.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3 (state).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Peak resident memory of this process, MiB (`VmHWM`).
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Resets the peak to the current resident size (Linux ≥ 4.0); false where refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
