//! Keys the caller presses (Twilio `dtmf` events) gathered into one caller turn for the LLM.
//!
//! Callers key in numbers digit by digit — an order number, a menu choice — so each digit is not a turn of its own:
//! digits collect until the caller presses `#` or stops pressing for `commit_after`, and the whole entry becomes one
//! turn whose text says what was pressed. Pure state, driven by the engine's clock, so it is unit-tested.

use std::time::Duration;

use tokio::time::Instant;

/// Collects key presses; see the module documentation.
#[derive(Debug)]
pub struct Keypad {
    commit_after: Duration,
    keys: Vec<String>,
    last_press: Option<Instant>,
}

impl Keypad {
    pub fn new(commit_after: Duration) -> Keypad {
        Keypad { commit_after, keys: Vec::new(), last_press: None }
    }

    /// Records a key; returns the finished entry when the key is `#`.
    pub fn press(&mut self, key: &str, now: Instant) -> Option<String> {
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        self.keys.push(key.to_owned());
        self.last_press = Some(now);
        (key == "#").then(|| self.take()).flatten()
    }

    /// When the entry in progress will be committed for lack of further keys.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_press.filter(|_| !self.keys.is_empty()).map(|at| at + self.commit_after)
    }

    /// Commits the entry once the caller has stopped pressing keys.
    pub fn on_tick(&mut self, now: Instant) -> Option<String> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.take(),
            _ => None,
        }
    }

    fn take(&mut self) -> Option<String> {
        self.last_press = None;
        if self.keys.is_empty() {
            return None;
        }
        let keys = std::mem::take(&mut self.keys).join(" ");
        Some(format!("[The caller pressed these keys on the phone keypad: {keys}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(2000);

    #[test]
    fn hash_ends_the_entry_at_once() {
        let start = Instant::now();
        let mut keypad = Keypad::new(WAIT);
        assert_eq!(keypad.press("4", start), None);
        assert_eq!(keypad.press("5", start), None);
        assert_eq!(keypad.press("6", start), None);
        let entry = keypad.press("#", start).unwrap();
        assert!(entry.contains("4 5 6 #"), "{entry}");
        assert_eq!(keypad.deadline(), None);
    }

    #[test]
    fn a_pause_ends_the_entry_and_each_key_restarts_the_wait() {
        let start = Instant::now();
        let mut keypad = Keypad::new(WAIT);
        keypad.press("1", start);
        keypad.press("2", start + Duration::from_millis(1500));
        assert_eq!(keypad.on_tick(start + Duration::from_millis(2500)), None, "the second key restarted the wait");
        assert_eq!(keypad.deadline(), Some(start + Duration::from_millis(3500)));
        let entry = keypad.on_tick(start + Duration::from_millis(3500)).unwrap();
        assert!(entry.ends_with("keypad: 1 2]"), "{entry}");
        assert_eq!(keypad.on_tick(start + Duration::from_secs(10)), None, "committed once");
    }

    #[test]
    fn a_lone_hash_is_still_an_entry_and_blank_keys_are_ignored() {
        let start = Instant::now();
        let mut keypad = Keypad::new(WAIT);
        assert_eq!(keypad.press(" ", start), None);
        assert_eq!(keypad.deadline(), None);
        assert!(keypad.press("#", start).unwrap().contains("keypad: #"));
    }
}
