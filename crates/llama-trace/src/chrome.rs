//! The Trace Event format that Perfetto and `chrome://tracing` open: one complete ("X")
//! event per action and one per phase inside it, on one track per concurrent slot, so the
//! picture shows how many actions ran at once and where each spent its time.

use serde_json::{Value, json};

use crate::record::Action;

/// Assigns each action (by index) the lowest track free when it arrives.
pub fn tracks(actions: &[Action]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..actions.len()).collect();
    order.sort_by_key(|&i| (actions[i].arrived_us, actions[i].finished_us));
    let mut busy_until: Vec<u64> = Vec::new();
    let mut track = vec![0; actions.len()];
    for i in order {
        let a = &actions[i];
        let slot = match busy_until.iter().position(|&end| end <= a.arrived_us) {
            Some(slot) => slot,
            None => {
                busy_until.push(0);
                busy_until.len() - 1
            }
        };
        busy_until[slot] = a.finished_us;
        track[i] = slot;
    }
    track
}

/// The build's trace as a Trace Event JSON object, times relative to its first arrival.
pub fn export(build: &str, actions: &[Action]) -> Value {
    let origin = actions.iter().map(|a| a.arrived_us).min().unwrap_or(0);
    let tracks = tracks(actions);
    let slots = tracks.iter().copied().max().map_or(0, |m| m + 1);
    let mut events = vec![json!({
        "ph": "M", "name": "process_name", "pid": 1, "tid": 0,
        "args": { "name": format!("llama build {build}") },
    })];
    for slot in 0..slots {
        events.push(json!({
            "ph": "M", "name": "thread_name", "pid": 1, "tid": slot + 1,
            "args": { "name": format!("slot {}", slot + 1) },
        }));
    }
    for (a, &slot) in actions.iter().zip(&tracks) {
        events.push(json!({
            "ph": "X", "pid": 1, "tid": slot + 1,
            "name": a.label, "cat": a.status.name(),
            "ts": a.arrived_us - origin, "dur": a.us(),
            "args": {
                "status": a.status.name(),
                "worker": a.worker,
                "bytes_up": a.bytes_up,
                "bytes_down": a.bytes_down,
                "dollars": a.dollars,
            },
        }));
        for span in &a.phases {
            events.push(json!({
                "ph": "X", "pid": 1, "tid": slot + 1,
                "name": span.phase.name(), "cat": "phase",
                "ts": span.start_us - origin, "dur": span.us(),
            }));
        }
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::action;

    #[test]
    fn overlapping_actions_get_their_own_tracks_and_free_ones_are_reused() {
        let actions = [
            action("a", 0, 10),
            action("b", 5, 20),
            action("c", 10, 30),
            action("d", 21, 25),
        ];
        assert_eq!(tracks(&actions), [0, 1, 0, 1]);
    }

    #[test]
    fn every_event_has_what_the_format_requires() {
        let actions = [action("a.c", 100, 200), action("b.c", 150, 400)];
        let trace = export("x", &actions);
        let events = trace["traceEvents"].as_array().unwrap();
        for e in events {
            assert!(
                e["ph"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
                "{e}"
            );
            if e["ph"] == "X" {
                assert!(
                    e["ts"].is_u64() && e["dur"].is_u64() && e["name"].is_string(),
                    "{e}"
                );
            }
        }
        let complete = events.iter().filter(|e| e["ph"] == "X").count();
        assert_eq!(complete, 4, "an event per action and per phase");
        assert_eq!(
            events.iter().filter(|e| e["name"] == "thread_name").count(),
            2
        );
    }
}
