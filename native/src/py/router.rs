//! `NativeRouter` for Python: stage 1 of the worker (route.rs `Router`), engine/firebreak/adapters/live/routing.py.

use crate::event;
use crate::route::*;
use crate::value::KeyPart;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::HashMap;

/// What `NativeRouter.route_batch` returns (route.rs `RoutedBatch`, with the bodies).
#[pyclass(module = "firebreak._native", name = "RoutedBatch", frozen, get_all)]
pub struct RoutedBatch {
    /// Per shard, its routed bodies (each its rows as one zstd frame, routed format 6): one, or
    /// several when large; an empty one when it has no event of the batch.
    pub bodies: Py<PyList>,
    /// (input partition, first offset, last offset, [events per shard]) in order of appearance.
    pub parts: Vec<(i64, i64, i64, Vec<u32>)>,
    /// Batch indexes of the messages the native decoder did not accept (Python gives the reason).
    pub refused: Vec<usize>,
    /// Events routed.
    pub events: usize,
    /// {partition: largest event time after the batch}.
    pub beats: HashMap<i64, i64>,
    /// {partition: events refused in a row as too far ahead, after the batch}.
    pub runs: HashMap<i64, u32>,
    /// (batch index, event time, the partition's time) of the events refused as too far ahead.
    pub ahead: Vec<(usize, i64, i64)>,
}

/// Stage 1 of the worker (engine/firebreak/adapters/live/routing.py): a batch of input messages
/// in, per shard the rows of the events it must see out (rows.rs).
#[pyclass(module = "firebreak._native")]
pub struct NativeRouter {
    router: Router,
    host: PyObject,
    limit: usize, // bytes of a shard's rows before they are split into another body
    out: RowBufs, // per shard, its rows of the batch (kept between batches: no fresh pages each time)
    packer: crate::frame::Packer, // packs each body into a zstd frame (routed format 6)
}

#[pymethods]
impl NativeRouter {
    #[new]
    fn new(plans: &[u8], shards: u32, host: PyObject, limit: usize) -> PyResult<NativeRouter> {
        let plans = crate::plan::parse_plans(plans).map_err(PyValueError::new_err)?;
        if shards == 0 || shards > 64 {
            return Err(PyValueError::new_err("the native router takes 1 to 64 shards"));
        }
        Ok(NativeRouter { router: Router::new(plans, shards), host, limit, out: RowBufs::new(shards as usize), packer: Default::default() })
    }

    /// ``messages``: [(partition, offset, value or None)]; ``times``: {batch index: ts} for
    /// events only the Python decoder accepts (their time as it found it); ``known``: the
    /// largest event time heard of per partition before this batch; ``runs``: per partition,
    /// its events refused in a row as too far ahead before this batch; ``max_skew``: how far
    /// after a partition's largest event time an event may be (None: no bound; engine.py
    /// `Engine.is_ahead`). Returns a `RoutedBatch` — the events refused as ahead are final, not in
    /// ``refused``. Decodes, routes, writes and compresses without the GIL.
    #[pyo3(signature = (messages, times, known, max_bytes, runs=HashMap::new(), max_skew=None))]
    #[allow(clippy::too_many_arguments)]
    fn route_batch<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        times: HashMap<usize, i64>,
        known: HashMap<i64, i64>,
        max_bytes: usize,
        runs: HashMap<i64, u32>,
        max_skew: Option<i64>,
    ) -> PyResult<RoutedBatch> {
        if max_skew.is_some_and(|s| s < 0) {
            return Err(PyValueError::new_err("the maximum skew cannot be negative"));
        }
        let mut values = Vec::with_capacity(messages.len()); // strong references: the bytes stay alive
        for item in messages.iter() {
            let item = item.downcast::<PyTuple>()?;
            let partition: i64 = item.get_item(0)?.extract()?;
            let offset: i64 = item.get_item(1)?.extract()?;
            let value = item.get_item(2)?;
            let value = if value.is_none() { None } else { Some(value.downcast_into::<PyBytes>()?) };
            values.push((partition, offset, value));
        }
        let spans: Vec<(i64, i64, &[u8])> =
            values.iter().map(|(p, o, v)| (*p, *o, v.as_ref().map_or(&b""[..], |b| b.as_bytes()))).collect();
        let (router, host, limit, out, packer) = (&mut self.router, &self.host, self.limit, &mut self.out, &mut self.packer);
        let crate::route::RoutedBatch { parts, beats, runs, ahead, refused, events } = py.allow_threads(|| {
            let batch = router.route_batch(&spans, &times, &known, &runs, max_skew, max_bytes, limit, &super::host::Remote(host), out);
            out.pack(packer); // zstd, here without the GIL rather than in the producer on the event loop
            batch
        });
        let bodies: Vec<Vec<Bound<'py, PyBytes>>> =
            self.out.bodies().map(|chunks| chunks.into_iter().map(|c| PyBytes::new(py, c)).collect()).collect();
        Ok(RoutedBatch { bodies: PyList::new(py, bodies)?.unbind(), parts, refused, events, beats, runs, ahead })
    }

    /// Start the traffic watch (native/src/watch.rs) from ``spec`` (`_Tallies.native_spec`, JSON):
    /// from the next batch, every event routed is counted into its tallies.
    fn watch_start(&mut self, spec: &[u8]) -> PyResult<()> {
        let watch = crate::watch::Watch::from_spec(spec, &self.router.plans).map_err(PyValueError::new_err)?;
        self.router.watch = Some(watch);
        Ok(())
    }

    /// The event time the watch has watched: (where its hour starts — the first observed event's
    /// time, or the median of the first events' when that one is far from it, `Watch::start` —
    /// the largest event time seen), None before any event (or with no watch). Not from the
    /// smallest time: an old event must not end the watch early.
    fn watch_span(&self) -> Option<(i64, i64)> {
        let watch = self.router.watch.as_ref()?;
        Some((watch.start()?, watch.last?))
    }

    /// The watch's tallies, taken once (the watch stops and its tallies are freed): (first,
    /// last, inference events, reports, per kind of the spec ([(present, true, numeric,
    /// distinct values)] per path tally, [(passed, groups, capped)] per count), [busiest window
    /// per rule of the spec]); None with no watch.
    #[allow(clippy::type_complexity)]
    fn watch_take(
        &mut self,
    ) -> Option<(
        Option<i64>,
        Option<i64>,
        u64,
        u64,
        Vec<(Vec<(u64, u64, u64, usize)>, Vec<(u64, usize, bool)>)>,
        Vec<u64>,
    )> {
        let watch = self.router.watch.take()?;
        let (kinds, busiest) = watch.facts();
        Some((watch.first, watch.last, watch.inference, watch.reports, kinds, busiest))
    }

    /// `sharding.shard_of` for a key given as the Python core's snapshot writes it (JSON).
    #[staticmethod]
    fn shard_of(rule: &str, key_json: &[u8], shards: u32) -> PyResult<u32> {
        let value = event::parse_json(key_json).ok_or_else(|| PyValueError::new_err("key: not JSON"))?;
        let items = value.as_array().ok_or_else(|| PyValueError::new_err("key: not a list"))?;
        let parts = items
            .iter()
            .map(KeyPart::from_json)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PyValueError::new_err("key: not a group key"))?;
        Ok(shard_of(rule, &parts, shards))
    }
}

