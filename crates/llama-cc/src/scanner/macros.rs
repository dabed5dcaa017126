//! A walk's macro table: the compiler's predefined macros, shared by every walk with the
//! same compiler set-up, with the walk's own `#define`s and `#undef`s over them.
//!
//! A walk starts from a few hundred predefined macros and defines thousands more as it
//! reads headers. Copying the predefined ones into each walk's table, and each definition
//! out of its file's directives, was most of a walk's time: here a walk starts by sharing
//! the predefined table, and a definition is shared with the directive it came from.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::expr::Macro;

/// Macros by name: shared ones, with this table's changes over them.
#[derive(Debug, Clone, Default)]
pub struct MacroTable {
    base: Arc<FxHashMap<String, Arc<Macro>>>,
    /// Defined (`Some`) or undefined (`None`) since the table was shared.
    over: FxHashMap<String, Option<Arc<Macro>>>,
}

impl MacroTable {
    /// The macro `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&Macro> {
        match self.over.get(name) {
            Some(changed) => changed.as_deref(),
            None => self.base.get(name).map(|m| &**m),
        }
    }

    /// Whether `name` is defined.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Defines `name`.
    pub fn insert(&mut self, name: String, definition: Arc<Macro>) {
        self.over.insert(name, Some(definition));
    }

    /// Undefines `name`.
    pub fn remove(&mut self, name: &str) {
        if self.base.contains_key(name) {
            self.over.insert(name.to_string(), None);
        } else {
            self.over.remove(name);
        }
    }

    /// This table with every change folded in, so its copies share it all.
    pub fn shared(self) -> MacroTable {
        if self.over.is_empty() {
            return self;
        }
        let mut base = Arc::unwrap_or_clone(self.base);
        for (name, changed) in self.over {
            match changed {
                Some(definition) => base.insert(name, definition),
                None => base.remove(&name),
            };
        }
        MacroTable {
            base: Arc::new(base),
            over: FxHashMap::default(),
        }
    }

    /// How many macros are defined.
    pub fn len(&self) -> usize {
        let added = self
            .over
            .iter()
            .filter(|(name, changed)| changed.is_some() && !self.base.contains_key(*name))
            .count();
        let removed = self
            .over
            .iter()
            .filter(|(name, changed)| changed.is_none() && self.base.contains_key(*name))
            .count();
        self.base.len() + added - removed
    }

    /// Whether none is defined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<&str> for MacroTable {
    type Output = Macro;

    /// The macro `name`; panics if it is not defined, as a map's index does.
    fn index(&self, name: &str) -> &Macro {
        match self.get(name) {
            Some(m) => m,
            None => panic!("macro {name} is not defined"),
        }
    }
}

impl FromIterator<(String, Macro)> for MacroTable {
    fn from_iter<I: IntoIterator<Item = (String, Macro)>>(iter: I) -> Self {
        let base = iter
            .into_iter()
            .map(|(name, m)| (name, Arc::new(m)))
            .collect();
        MacroTable {
            base: Arc::new(base),
            over: FxHashMap::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &str) -> Arc<Macro> {
        Arc::new(Macro {
            params: None,
            body: body.into(),
        })
    }

    #[test]
    fn changes_lie_over_the_shared_table_and_fold_into_it() {
        let base: MacroTable = [("A".to_string(), (*object("1")).clone())]
            .into_iter()
            .collect();
        let mut t = base.clone();
        t.insert("B".into(), object("2"));
        t.remove("A");
        assert!(!t.contains_key("A") && t.get("B").is_some_and(|m| m.body == "2"));
        assert_eq!(t.len(), 1);
        assert!(
            base.contains_key("A") && !base.contains_key("B"),
            "the shared table is untouched"
        );
        t.insert("A".into(), object("3"));
        t.remove("C");
        let folded = t.shared();
        assert_eq!(folded.get("A").map(|m| m.body.as_str()), Some("3"));
        assert_eq!(folded.len(), 2);
        assert!(!folded.is_empty());
    }
}
