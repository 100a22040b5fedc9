//! What loading hostile YAML costs in memory, measured by a counting allocator: an alias bomb
//! is refused before the copies it asks for are made, so the most a load holds at once stays
//! near the tree budget (`yaml::Limits::max_tree_bytes`) whatever the aliases multiply.
//!
//! One test in this binary: the allocator's peak is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hodei_domain::diagnostic::Code;
use hodei_domain::load::load_bytes;
use hodei_domain::yaml::Limits;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only the byte counts are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Nine levels of ten aliases to the level below: 10^9 copies of the first level.
fn laughs(first: &str) -> String {
    let mut source = format!("name: bomb\na0: &a0 [{first}]\n");
    for i in 1..9 {
        let aliases = vec![format!("*a{}", i - 1); 10].join(",");
        source.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
    }
    source.push_str("jobs: {x: {steps: [{run: *a8}]}}\n");
    source
}

/// The same with mappings merged into mappings (`<<`), each level with ten keys.
fn merges() -> String {
    let mut source = String::from("name: bomb\nb0: &b0 {k: v}\n");
    for i in 1..9 {
        let keys: Vec<String> = (0..10).map(|k| format!("k{k}: *b{}", i - 1)).collect();
        source.push_str(&format!(
            "b{i}: &b{i} {{<<: *b{}, {}}}\n",
            i - 1,
            keys.join(", ")
        ));
    }
    source.push_str("jobs: {x: {steps: [{run: echo}], env: *b8}}\n");
    source
}

/// Loads `source` and answers the diagnostic's code and the most bytes live at once.
fn peak_of(source: &str) -> (Option<Code>, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let loaded = load_bytes(source.as_bytes());
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let code = loaded.diagnostics.first().map(|d| d.code);
    drop(loaded);
    (code, peak)
}

#[test]
fn alias_bombs_are_refused_within_the_tree_budget() {
    let budget = Limits::default().max_tree_bytes;
    let long = format!("\"{}\"", "x".repeat(400));
    let bombs = [
        ("ten short scalars", laughs(&["x"; 10].join(","))),
        ("one 400-byte scalar", laughs(&long)),
        ("merge keys", merges()),
    ];
    for (what, source) in &bombs {
        assert!(source.len() < 1024, "{what}: {} bytes", source.len());
        let (code, peak) = peak_of(source);
        assert_eq!(code, Some(Code::Limit), "{what}: refused as over a limit");
        // The budget, plus the parser's own buffers and the diagnostics.
        assert!(
            peak <= budget + (4 << 20),
            "{what}: {} bytes of YAML held {} MiB at once, over the {} MiB budget",
            source.len(),
            peak >> 20,
            budget >> 20
        );
    }
}
