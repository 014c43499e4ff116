//! Collectors: hit counts by kind in the same pass as the top hits, and the deadline every
//! collector of a search runs under.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::schema::Schema;
use tantivy::{DocId, Score, SegmentReader};

use crate::SearchError;

/// Counts hits, in total and by kind, reading the `kind` column: one pass without scores,
/// beside a top-k pass that block-max pruning keeps short.
pub(crate) struct KindTally;

pub(crate) struct SegmentTally {
    pub(crate) kinds: Option<tantivy::columnar::StrColumn>,
    pub(crate) by_ord: Vec<u64>,
    pub(crate) total: u64,
    /// Scratch for a block's kind ordinals.
    pub(crate) ords: Vec<Option<u64>>,
}

impl Collector for KindTally {
    type Fruit = (usize, BTreeMap<String, u64>);
    type Child = SegmentTally;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentTally> {
        let kinds = segment.fast_fields().str("kind")?;
        let terms = kinds.as_ref().map_or(0, |k| k.num_terms());
        Ok(SegmentTally {
            kinds,
            by_ord: vec![0; terms],
            total: 0,
            ords: vec![None; tantivy::COLLECT_BLOCK_BUFFER_LEN],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<(u64, BTreeMap<String, u64>)>) -> tantivy::Result<Self::Fruit> {
        let mut total = 0;
        let mut by_kind = BTreeMap::new();
        for (n, kinds) in segments {
            total += n;
            for (kind, count) in kinds {
                *by_kind.entry(kind).or_insert(0) += count;
            }
        }
        Ok((usize::try_from(total).unwrap_or(usize::MAX), by_kind))
    }
}

impl SegmentCollector for SegmentTally {
    type Fruit = (u64, BTreeMap<String, u64>);

    fn collect(&mut self, doc: DocId, _: Score) {
        self.total += 1;
        if let Some(ord) = self.kinds.as_ref().and_then(|k| k.ords().first(doc))
            && let Some(n) = self.by_ord.get_mut(ord as usize)
        {
            *n += 1;
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.total += docs.len() as u64;
        let Some(kinds) = &self.kinds else { return };
        // A block at a time: the column reads a full block without an iterator per document.
        for chunk in docs.chunks(self.ords.len()) {
            let ords = &mut self.ords[..chunk.len()];
            ords.fill(None);
            kinds.ords().first_vals(chunk, ords);
            for ord in ords.iter().flatten() {
                if let Some(n) = self.by_ord.get_mut(*ord as usize) {
                    *n += 1;
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut by_kind = BTreeMap::new();
        if let Some(kinds) = &self.kinds {
            for (ord, &count) in self.by_ord.iter().enumerate() {
                let mut name = String::new();
                if count > 0 && kinds.ord_to_str(ord as u64, &mut name).unwrap_or(false) {
                    by_kind.insert(name, count);
                }
            }
        }
        (self.total, by_kind)
    }
}

/// A search's deadline, checked by the collectors between segments and by the hit loop.
pub(crate) struct Deadline {
    pub(crate) until: std::time::Instant,
    pub(crate) passed: std::sync::atomic::AtomicBool,
}

impl Deadline {
    pub(crate) fn after(d: std::time::Duration) -> Self {
        Deadline {
            until: std::time::Instant::now() + d,
            passed: Default::default(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), SearchError> {
        if std::time::Instant::now() > self.until {
            self.passed.store(true, Ordering::Relaxed);
            return Err(SearchError::Limit("the search ran past its deadline"));
        }
        Ok(())
    }

    pub(crate) fn on<C>(&self, inner: C) -> Timed<'_, C> {
        Timed {
            inner,
            deadline: self,
        }
    }

    /// A collector's error: the deadline's when it was the cause.
    pub(crate) fn error(&self, e: tantivy::TantivyError) -> SearchError {
        if self.passed.load(Ordering::Relaxed) {
            SearchError::Limit("the search ran past its deadline")
        } else {
            e.into()
        }
    }
}

/// A collector that refuses to start another segment once its deadline has passed.
pub(crate) struct Timed<'a, C> {
    pub(crate) inner: C,
    pub(crate) deadline: &'a Deadline,
}

impl<C> Timed<'_, C> {
    fn started(&self) -> tantivy::Result<()> {
        self.deadline
            .check()
            .map_err(|_| tantivy::TantivyError::InvalidArgument("search deadline".into()))
    }
}

impl<C: Collector> Collector for Timed<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn check_schema(&self, schema: &Schema) -> tantivy::Result<()> {
        self.inner.check_schema(schema)
    }

    fn for_segment(&self, id: u32, segment: &SegmentReader) -> tantivy::Result<Self::Child> {
        self.started()?;
        self.inner.for_segment(id, segment)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    // Delegated as a whole: top-k collectors prune blocks (block-max WAND) in their own
    // `collect_segment`, which the default one would lose.
    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        id: u32,
        segment: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        self.started()?;
        self.inner.collect_segment(weight, id, segment)
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(fruits)
    }
}
