//! firebreak._native: Firebreak's native detection core, loaded by engine/firebreak/native.
//!
//! `Core` takes the compiled rule plan (engine/firebreak/dsl/plan.py) and raw JSON lines in
//! batches, and gives back the records of the Python core, byte for byte. See docs/native.md.
//! Everything Python sees — classes, methods, the module — is in `py/` (the bindings); the
//! other modules are the engine, free of Python: they ask their host through the traits of
//! host.rs, and build and test without pyo3 (`cargo test --lib --no-default-features`).

// Without the bindings, what only they call is unused.
#![cfg_attr(not(feature = "python"), allow(dead_code))]

mod engine;
#[cfg(test)]
mod engine_tests;
mod event;
mod frame;
mod groups;
mod host;
mod json;
mod keys;
mod num;
mod plan;
#[cfg(feature = "python")]
mod py;
mod rootcause;
mod route;
mod rows;
mod schedule;
mod sketch;
mod smallstr;
mod snapshot;
mod value;
mod watch;
mod window;


// Many small short-lived allocations (decoded events) beside many small long-lived ones
// (buckets, evidence): mimalloc's per-size free lists serve both faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc gives the pages a heap empties back to the system (a second later by default),
/// and the kernel zeroes them again when they are next touched — as whole 2 MB pages where
/// the heap asked for transparent huge pages: ~180 MB purged and faulted back in a replay of
/// the 1M-event benchmark file, 5–8% of its CPU time (docs/native.md, Memory). The engine
/// keeps them instead; ``MIMALLOC_PURGE_DELAY`` still decides when it is set.
pub(crate) fn tune_allocator() {
    // `mi_option_purge_delay`'s place in the option lists of mimalloc 2.x and 3.x (3.3 is
    // built here; libmimalloc-sys names no constant for it): only set on those versions
    // (`mi_version`: major * 10000 + minor * 100 + patch)
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reads mimalloc's version and sets one of its options; -1 is valid for this one.
    unsafe {
        if matches!(libmimalloc_sys::mi_version() / 10000, 2 | 3) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

