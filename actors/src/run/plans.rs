//! The plans of pipeline definitions, shared: runs of the same text hold one plan, not one
//! each, and the text is parsed and planned once.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use hodei_domain::load::load;
use hodei_domain::plan::{Plan, plan};

/// How many recently used plans stay cached while no run holds them: a pipeline triggered
/// again is not planned again.
const KEPT: usize = 16;

/// A plan with the text it was made from.
pub struct SharedPlan {
    source: String,
    plan: Plan,
}

impl std::ops::Deref for SharedPlan {
    type Target = Plan;

    fn deref(&self) -> &Plan {
        &self.plan
    }
}

#[derive(Default)]
struct Cache {
    by_hash: HashMap<u64, Weak<SharedPlan>>,
    /// The latest plans handed out, kept alive.
    recent: VecDeque<Arc<SharedPlan>>,
}

/// The plan of a pipeline definition, shared with every run that uses the same text; `None`
/// when the text does not load (its diagnostics come from [`load`]).
pub fn shared_plan(source: &str) -> Option<Arc<SharedPlan>> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    let key = hasher.finish();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Ok(cache) = cache.lock()
        && let Some(shared) = cache.by_hash.get(&key).and_then(Weak::upgrade)
        && shared.source == source
    {
        return Some(shared);
    }
    let pipeline = load(source).pipeline?;
    let shared = Arc::new(SharedPlan {
        source: source.to_owned(),
        plan: plan(&pipeline),
    });
    if let Ok(mut cache) = cache.lock() {
        cache.by_hash.retain(|_, weak| weak.strong_count() > 0);
        cache.by_hash.insert(key, Arc::downgrade(&shared));
        cache.recent.push_back(shared.clone());
        if cache.recent.len() > KEPT {
            cache.recent.pop_front();
        }
    }
    Some(shared)
}
