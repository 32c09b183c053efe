//! A simulated Twilio caller: plays Twilio's side of a bidirectional Media Stream against Parley. The client itself
//! is Parley's (`parley::eval::caller`, shared with `parley eval`); this crate adds the scripted dialogues.

pub use parley::eval::caller::*;

/// Scripted callers: the client's dialogue runner plus the built-in scripts.
pub mod dialogue {
    pub use parley::eval::dialogue::*;

    /// The dialogue `parley demo` runs: a caller asks about order 456, cuts the answer short, asks when it arrives.
    pub const ORDER_STATUS: &str = include_str!("../dialogues/order-status.toml");

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_order_status_dialogue_parses_and_interrupts_once() {
            let dialogue = Dialogue::parse(ORDER_STATUS).unwrap();
            assert!(dialogue.lines.len() >= 3);
            assert_eq!(dialogue.lines.iter().filter(|l| l.interrupt_after_ms.is_some()).count(), 1);
        }
    }
}
