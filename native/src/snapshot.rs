//! Snapshots of the native state in the Python core's layout (Engine.snapshot), so a
//! snapshot of either engine restores into either. See docs/native.md, "Snapshots".

use crate::engine::{ensure_bucket, Engine, Group, Status};
use crate::host::Calls;
use crate::sketch::{DistinctSketch, Mins, QuantileSketch};
use crate::value::{KeyPart, Num};
use crate::smallstr::Packed;
use crate::window::{Bucket, Evidence, Extra, Numeric, Order};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const SNAPSHOT_VERSION: i64 = 2; // firebreak.core.engine.SNAPSHOT_VERSION: the same layout
/// The versions `read` restores (`engine.READS_VERSIONS`: 1 has no excluded spans).
pub const READS_VERSIONS: [i64; 2] = [1, 2];

fn opt_num(v: Option<Num>) -> Value {
    v.map(Num::to_json).unwrap_or(Value::Null)
}

fn total_json(t: i128) -> Value {
    i64::try_from(t)
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(t as f64))
}

/// ``cleared``: a bucket out of every later window (`Group::seen_at`): written without its
/// users and evidence, as the core has dropped them.
fn bucket_json(b: &Bucket, cleared: bool, scope_names: &[String], keeps_squares: bool) -> Value {
    let quantiles = b.quantiles().map(|q| {
        json!([
            q.pos.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            q.neg.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            q.zero,
            q.n
        ])
    });
    let evidence: Vec<Value> = b
        .evidence
        .iter()
        .filter(|_| !cleared)
        .map(|e| {
            let order = match e.order {
                Order::Ts(ts) => json!(ts),
                Order::Value(v, ts) => json!([v.to_json(), ts]),
            };
            match e.text.scope() {
                None => json!([order, e.id()]),
                // its event's values of the rule's scope dimensions: {dimension: value}
                Some(values) => {
                    let mut scope = Map::new();
                    for (name, value) in scope_names.iter().zip(values) {
                        if let Some(v) = value {
                            scope.insert(name.clone(), Value::from(v));
                        }
                    }
                    json!([order, e.id(), scope])
                }
            }
        })
        .collect();
    let mut json = json!([
        b.n,
        b.hits,
        b.vn(),
        total_json(b.total()),
        opt_num(b.lo()),
        opt_num(b.hi()),
        quantiles.unwrap_or(Value::Null),
        b.distinct()
            .map(|d| json!(d.mins.as_slice()))
            .unwrap_or(Value::Null),
        if cleared { &[] } else { b.users.mins.as_slice() },
        evidence
    ]);
    if keeps_squares {
        // an eleventh part where kept (window.py Bucket.snapshot), in decimal digits
        json.as_array_mut().unwrap().push(Value::String(b.sq().to_string()));
    }
    json
}

/// The snapshot's JSON, each group's `life` an index into the lifecycles given with it
/// (``share``: another handle to one, `Calls::share`).
pub fn write<O>(engine: &Engine<O>, share: &mut dyn FnMut(&O) -> O) -> (Vec<u8>, Vec<O>) {
    let mut lives = Vec::new();
    let rules = rules_json(engine, &mut |life: &O| {
        lives.push(share(life));
        Ok(Value::from(lives.len() - 1))
    })
    .unwrap(); // (this writer of lives never fails)
    let rules = rules
        .into_iter()
        .map(|(name, mut rule)| {
            let mut named = Map::new();
            named.insert("name".into(), Value::from(name));
            named.append(&mut rule);
            Value::Object(named)
        })
        .collect::<Vec<_>>();
    let snapshot = layout(engine, json!(engine.opened), Value::Array(rules));
    (serde_json::to_vec(&snapshot).unwrap(), lives)
}

/// A snapshot's top level around its ``opened`` counts and its ``rules``.
fn layout<O>(engine: &Engine<O>, opened: Value, rules: Value) -> Value {
    json!({
        "version": SNAPSHOT_VERSION,
        "lateness_ms": engine.lateness_ms,
        "max_ts": engine.max_ts,
        "watermark": engine.watermark,
        "stats": engine.stats(),
        "opened": opened,
        "rules": rules,
    })
}

/// The whole of `NativeEngine.snapshot()` as JSON, written here at once (a full checkpoint,
/// docs/live.md): what `write` gives and Python finished — each group's Lifecycle as its
/// `to_json()` (``idle_life``: that of a group without one), the rules keyed by name with
/// their ``fingerprints``, ``opened`` — without making Python objects of the whole state
/// and JSON of them again (most of a full checkpoint's time on the event loop). ``life_json``:
/// a lifecycle's `to_json()`, made by the host.
pub fn write_layout<O>(
    engine: &Engine<O>,
    life_json: &mut dyn FnMut(&O) -> Result<Value, String>,
    fingerprints: &std::collections::HashMap<String, String>,
    idle_life: &[u8],
    opened: &[u8],
) -> Result<Vec<u8>, String> {
    let idle: Value = serde_json::from_slice(idle_life).map_err(|e| e.to_string())?;
    let opened: Value = serde_json::from_slice(opened).map_err(|e| e.to_string())?;
    let rules = rules_json(engine, life_json)?;
    let mut by_name = Map::new();
    for (name, rule) in rules {
        let fingerprint = fingerprints
            .get(&name)
            .ok_or_else(|| format!("no fingerprint for rule {name}"))?;
        let mut item = Map::new();
        item.insert("fingerprint".into(), Value::from(fingerprint.clone()));
        for (k, mut v) in rule {
            if k == "groups" {
                for group in v.as_array_mut().into_iter().flatten() {
                    if let Some(life) = group.get_mut("life") {
                        if life.is_null() {
                            *life = idle.clone();
                        }
                    }
                }
            }
            item.insert(k, v);
        }
        by_name.insert(name, Value::Object(item));
    }
    let snapshot = layout(engine, opened, Value::Object(by_name));
    serde_json::to_vec(&snapshot).map_err(|e| e.to_string())
}

/// Per rule (in order): its name and `{next_eval, population?, groups}`; each group's `life`
/// what ``life_of`` makes of its Lifecycle, or null.
fn rules_json<O>(
    engine: &Engine<O>,
    life_of: &mut dyn FnMut(&O) -> Result<Value, String>,
) -> Result<Vec<(String, Map<String, Value>)>, String> {
    let mut rules = Vec::new();
    for state in &engine.rules {
        let table = &engine.key_tables[state.plan.by_id];
        let mut keys: Vec<u32> = state.groups.keys().collect();
        keys.sort_by_cached_key(|key| table.order(*key));
        let mut groups: Vec<Value> = Vec::with_capacity(keys.len());
        for key in keys {
            let group = state.groups.get(key).unwrap();
            let life = match &group.life {
                Some(life) => life_of(life)?,
                None => Value::Null,
            };
            let mut item = json!({
                "key": table.parts(key).iter().map(KeyPart::to_json).collect::<Vec<_>>(),
                "first_seen": group.first_seen,
                "buckets": group.buckets.iter().map(|(s, b)| {
                    let cleared = group.seen_at != i64::MIN && *s < group.seen_at - state.plan.window_ms;
                    json!([s, bucket_json(b, cleared, &state.plan.scope_names, state.plan.keeps_squares)])
                }).collect::<Vec<_>>(),
                "life": life,
            });
            if !group.excluded().is_empty() {
                item["excluded"] = group
                    .excluded()
                    .iter()
                    .map(|x| json!([x.start, x.end, x.baseline]))
                    .collect();
            }
            groups.push(item);
        }
        let mut rule = Map::new();
        rule.insert("next_eval".into(), json!(state.next_eval));
        if let Some(population) = &state.population {
            rule.insert(
                "population".into(),
                json!(population
                    .iter()
                    .map(|(s, (n, h))| json!([s, n, h]))
                    .collect::<Vec<_>>()),
            );
        }
        rule.insert("groups".into(), Value::Array(groups));
        rules.push((state.plan.name.clone(), rule));
    }
    Ok(rules)
}

fn int(v: &Value) -> Result<i64, String> {
    v.as_i64().ok_or_else(|| format!("not an integer: {v}"))
}

fn hashes(v: &Value) -> Result<Vec<u64>, String> {
    let mut out: Vec<u64> = v
        .as_array()
        .ok_or("hashes")?
        .iter()
        .map(|h| h.as_u64().ok_or("hash"))
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.truncate(crate::sketch::DISTINCT_K);
    Ok(out)
}

fn counts(v: &Value) -> Result<crate::sketch::Counts, String> {
    let counts = v
        .as_array()
        .ok_or("counts")?
        .iter()
        .map(|kv| Ok((int(&kv[0])?, int(&kv[1])?)))
        .collect::<Result<BTreeMap<i64, i64>, String>>()?; // a repeated bin: the last, as in a dict
    Ok(counts.into_iter().collect())
}

/// A saved sum of squares (decimal digits: window.py `_squares`), or `i128::MAX` — no known
/// spread — if it is not one.
fn squares(v: Option<&Value>) -> i128 {
    v.and_then(Value::as_str)
        .filter(|t| t.len() <= 39 && t.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|t| t.parse::<u128>().ok())
        .map_or(i128::MAX, |q| q.min(i128::MAX as u128) as i128)
}

fn bucket_from(v: &Value, scope_names: &[String], keeps_squares: bool) -> Result<Bucket, String> {
    let a = v.as_array().ok_or("a bucket is a list")?;
    if a.len() != 10 && a.len() != 11 {
        return Err("a bucket has 10 parts (11 with its squares)".into());
    }
    let quantiles = if a[6].is_null() {
        None
    } else {
        let q = a[6].as_array().ok_or("quantiles")?;
        Some(Box::new(QuantileSketch {
            pos: counts(&q[0])?,
            neg: counts(&q[1])?,
            zero: int(&q[2])?,
            n: int(&q[3])?,
        }))
    };
    let evidence = a[9]
        .as_array()
        .ok_or("evidence")?
        .iter()
        .map(|e| {
            let id = e[1].as_str().ok_or("evidence id")?;
            let order = match &e[0] {
                Value::Array(vt) => Order::Value(
                    crate::value::number_value(&vt[0]).ok_or("evidence value")?,
                    int(&vt[1])?,
                ),
                ts => Order::Ts(int(ts)?),
            };
            let text = match e.get(2).and_then(Value::as_object) {
                Some(saved) if !scope_names.is_empty() => {
                    let values: Vec<Option<&str>> =
                        scope_names.iter().map(|d| saved.get(d).and_then(Value::as_str)).collect();
                    Packed::new(id, Some(&values))
                }
                _ => Packed::new(id, None),
            };
            Ok(Evidence { order, text })
        })
        .collect::<Result<Box<[_]>, String>>()?;
    let mut num = Numeric {
        vn: int(&a[2])?,
        total: a[3]
            .as_i64()
            .map(|t| t as i128)
            .or_else(|| a[3].as_f64().map(|t| t as i128))
            .ok_or("total")?,
        lo: crate::value::number_value(&a[4]),
        hi: crate::value::number_value(&a[5]),
        quantiles,
        sq: 0,
    };
    if keeps_squares && num.vn > 0 {
        num.sq = squares(a.get(10)); // saved without: no known spread (window.py Bucket.restore)
    }
    let empty = num.vn == 0
        && num.total == 0
        && num.lo.is_none()
        && num.hi.is_none()
        && num.quantiles.is_none();
    Ok(Bucket {
        n: int(&a[0])?,
        hits: int(&a[1])?,
        extra: match (empty, a[7].is_null()) {
            (true, true) => None,
            (false, true) => Some(Box::new(Extra::Num(num))),
            (true, false) => Some(Box::new(Extra::Distinct(DistinctSketch {
                mins: Mins::from_vec(hashes(&a[7])?),
            }))),
            (false, false) => return Err("a bucket with both numbers and a distinct sketch".into()),
        },
        users: DistinctSketch {
            mins: Mins::from_vec(hashes(&a[8])?),
        },
        evidence,
    })
}

/// Restore into a fresh engine of the same rules. ``lives``: the Lifecycle objects the
/// groups' `life` indexes point at.
pub fn read<O, E>(
    engine: &mut Engine<O>,
    json: &[u8],
    lives: Vec<O>,
    host: &dyn Calls<O, E>,
) -> Result<(), String> {
    let snapshot = crate::event::parse_json(json).ok_or("a snapshot is JSON")?;
    if !snapshot["version"].as_i64().is_some_and(|v| READS_VERSIONS.contains(&v)) {
        return Err(format!(
            "unsupported snapshot version {}",
            snapshot["version"]
        ));
    }
    engine.max_ts = snapshot["max_ts"].as_i64();
    engine.watermark = snapshot["watermark"].as_i64();
    for (k, v) in snapshot["stats"].as_object().ok_or("stats")? {
        engine.stats.insert(k.clone(), int(v)?);
    }
    for (k, v) in snapshot["opened"].as_object().ok_or("opened")? {
        engine.opened.insert(k.clone(), int(v)?);
    }
    let saved = snapshot["rules"].as_array().ok_or("rules")?;
    for state in engine.rules.iter_mut() {
        let Some(data) = saved
            .iter()
            .find(|r| r["name"].as_str() == Some(state.plan.name.as_str()))
        else {
            continue;
        };
        state.next_eval = data["next_eval"].as_i64();
        if let Some(population) = state.population.as_mut() {
            if let Some(items) = data.get("population").and_then(Value::as_array) {
                for item in items {
                    *crate::engine::population_entry(population, int(&item[0])?) =
                        (int(&item[1])?, int(&item[2])?);
                }
            }
        }
        for item in data["groups"].as_array().ok_or("groups")? {
            let parts = item["key"]
                .as_array()
                .ok_or("key")?
                .iter()
                .map(|p| KeyPart::from_json(p).ok_or("key part"))
                .collect::<Result<Vec<_>, _>>()?;
            let key = engine.key_tables[state.plan.by_id].intern(&parts);
            let mut group = Group::new();
            group.first_seen = item["first_seen"].as_i64();
            for b in item["buckets"].as_array().ok_or("buckets")? {
                group.buckets.push_back((int(&b[0])?, bucket_from(&b[1], &state.plan.scope_names, state.plan.keeps_squares)?));
            }
            group.buckets.make_contiguous().sort_by_key(|(s, _)| *s);
            group.totals = crate::engine::Totals::of(&group.buckets);
            if let Some(spans) = item.get("excluded").and_then(Value::as_array) {
                for span in spans {
                    group.add_excluded(crate::engine::Excluded {
                        start: int(&span[0])?,
                        end: int(&span[1])?,
                        baseline: span[2].as_f64(),
                    });
                }
            }
            if let Some(i) = item["life"].as_u64() {
                let life = host.share(lives.get(i as usize).ok_or("life index")?);
                let (status, frozen_baseline) = host.life_state(&life)?;
                group.status = status;
                group.frozen_baseline = frozen_baseline;
                if group.status != Status::Inactive {
                    group.life = Some(life);
                }
            }
            let starts: Vec<i64> = group.buckets.iter().map(|(s, _)| *s).collect();
            let (first_seen, active) = (group.first_seen, group.status != Status::Inactive);
            state.groups.insert(key, group);
            let after = state.next_eval;
            for start in starts {
                state.schedule(key, start, Some(start) == first_seen, after);
            }
            if active {
                state.active.insert(key);
            }
        }
    }
    let _ = ensure_bucket::<O>; // (restore fills groups directly)
    Ok(())
}

/// (groups, buckets, estimated bytes) of the state held now, keys included.
pub fn memory<O>(engine: &Engine<O>) -> (usize, usize, usize) {
    use std::mem::size_of;
    let (mut groups, mut buckets, mut bytes) = (0, 0, 0);
    for table in &engine.key_tables {
        // the interned keys: the table and their bytes, and each key's parts
        bytes += table.heap_bytes();
    }
    for state in &engine.rules {
        for group in state.groups.values() {
            groups += 1;
            // the room the buckets have (a sparse group's for one), whether used or not
            bytes += (group.buckets.capacity() - group.buckets.len()) * size_of::<(i64, Bucket)>();
            for (_, b) in &group.buckets {
                buckets += 1;
                bytes += size_of::<(i64, Bucket)>() + b.users.mins.heap_bytes();
                bytes += b
                    .evidence
                    .iter()
                    .map(|e| {
                        size_of::<Evidence>() + e.text.heap_bytes()
                    })
                    .sum::<usize>();
                if b.extra.is_some() {
                    bytes += size_of::<Extra>();
                }
                if let Some(num) = b.num() {
                    if let Some(q) = &num.quantiles {
                        bytes += size_of::<QuantileSketch>()
                            + (q.pos.capacity() + q.neg.capacity()) * 16;
                    }
                }
                if let Some(d) = b.distinct() {
                    bytes += d.mins.heap_bytes();
                }
            }
        }
        bytes += state.due.size().1 + state.groups.index_bytes();
        for group in state.groups.values() {
            if let Some(spans) = &group.excluded {
                bytes += size_of::<Vec<crate::engine::Excluded>>()
                    + spans.capacity() * size_of::<crate::engine::Excluded>();
            }
        }
    }
    (groups, buckets, bytes)
}

/// `memory`, by part (`Core.memory_parts`, benchmarks/replay_bench.py --memory): estimated
/// bytes and counts of what the state holds, by name.
pub fn memory_parts<O>(engine: &Engine<O>) -> BTreeMap<&'static str, usize> {
    use std::mem::size_of;
    let mut m: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut add = |k: &'static str, v: usize| *m.entry(k).or_insert(0) += v;
    for table in &engine.key_tables {
        add("keys bytes", table.heap_bytes());
        add("keys", table.len());
    }
    for state in &engine.rules {
        add("groups index bytes", state.groups.index_bytes());
        add("schedule bytes", state.due.size().1);
        for group in state.groups.values() {
            add("groups", 1);
            add("bucket room unused bytes", (group.buckets.capacity() - group.buckets.len()) * size_of::<(i64, Bucket)>());
            if group.buckets.len() == 1 {
                add("groups of one bucket", 1);
            }
            for (_, b) in &group.buckets {
                add("buckets", 1);
                add("bucket bytes", size_of::<(i64, Bucket)>());
                add("users heap bytes", b.users.mins.heap_bytes());
                add("evidence items", b.evidence.len());
                add("evidence item bytes", b.evidence.len() * size_of::<Evidence>());
                if !b.evidence.is_empty() {
                    add("evidence vectors", 1);
                }
                for e in b.evidence.iter() {
                    add("evidence text heap bytes", e.text.heap_bytes());
                    add("evidence texts on the heap", (e.text.heap_bytes() > 0) as usize);
                    if let Some(s) = e.text.scope() {
                        add("evidence scopes", 1);
                        add("evidence scope strings", s.flatten().count());
                    }
                }
                if b.extra.is_some() {
                    add("extra bytes", size_of::<Extra>());
                }
                if let Some(num) = b.num() {
                    add("numeric parts", 1);
                    if let Some(q) = &num.quantiles {
                        add("quantile sketches", 1);
                        add("quantile bins", q.pos.len() + q.neg.len());
                        add("quantile bytes", size_of::<QuantileSketch>() + (q.pos.capacity() + q.neg.capacity()) * 16);
                    }
                }
                if let Some(d) = b.distinct() {
                    add("distinct sketches", 1);
                    add("distinct heap bytes", d.mins.heap_bytes());
                }
            }
            if let Some(spans) = &group.excluded {
                add("excluded bytes", size_of::<Vec<crate::engine::Excluded>>() + spans.capacity() * size_of::<crate::engine::Excluded>());
            }
        }
    }
    m
}
