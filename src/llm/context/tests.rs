use super::*;
use crate::llm::history::{append_tool_round, ToolOutcome, ToolResult};
use crate::llm::ToolCall;

fn config(max_tokens: u32, summary: bool) -> ContextConfig {
    ContextConfig { max_tokens, summary, ..ContextConfig::default() }
}

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "lookup_order".into(),
        description: "Look up an order by its number".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    }]
}

/// A big backend answer, as an order API gives it.
fn order_json(turn: usize) -> String {
    let items: Vec<String> = (0..12)
        .map(|item| {
            format!(r#"{{"sku":"SKU-{turn}-{item}","name":"item number {item} of a long order","price":{item}.5}}"#)
        })
        .collect();
    format!(r#"{{"order_id":"{turn}00","status":"shipped","eta":"Friday","items":[{}]}}"#, items.join(","))
}

/// Turn `turn` of a call: the caller's words, and every third turn a tool round before the answer.
fn play_turn(history: &mut Vec<ChatMessage>, turn: usize) {
    history.push(ChatMessage::user(format!("This is turn {turn}; tell me about order {turn}00, please.")));
    if turn.is_multiple_of(3) {
        let call = ToolCall {
            id: format!("call_{turn}"),
            name: "lookup_order".into(),
            arguments: format!("{{\"order_id\":\"{turn}00\"}}"),
        };
        let result = ToolResult { call_id: call.id.clone(), outcome: ToolOutcome::ok(order_json(turn)) };
        append_tool_round(history, "", &[call], &[result]);
    }
    history.push(ChatMessage::assistant(format!("Order {turn}00 has shipped and arrives on Friday.")));
}

#[test]
fn under_the_budget_the_whole_call_is_sent() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(6_000, true), TokenCounter::Estimate);
    for turn in 1..=3 {
        play_turn(&mut history, turn);
        assert!(window.fit(&mut history, &tools()).is_none());
        assert!(window.between_turns(&mut history, &tools()).is_none());
    }
    assert_eq!(window.messages(&history), history);
}

#[test]
fn without_a_budget_nothing_ever_leaves() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(0, true), TokenCounter::Estimate);
    for turn in 1..=40 {
        play_turn(&mut history, turn);
        assert!(window.fit(&mut history, &tools()).is_none());
    }
    assert_eq!(window.messages(&history), history);
}

/// Forty turns with the summary off: every request is within the budget, keeps the system prompt and the last
/// turns, and the prefix changes only on the few turns where older turns leave.
#[test]
fn forty_turns_stay_within_the_budget_and_the_prefix_changes_rarely() {
    let budget = 3_000;
    let counter = TokenCounter::for_model("gpt-4o-mini");
    let mut history = vec![ChatMessage::system("You are a phone agent for Acme. Keep answers short.")];
    let mut window = ContextWindow::new(config(budget, false), counter);
    let mut previous: Vec<ChatMessage> = Vec::new();
    let mut prefix_changes = 0;
    for turn in 1..=40 {
        play_turn(&mut history, turn);
        assert!(window.fit(&mut history, &tools()).is_none(), "no fold to summarise with the summary off");
        let sent = window.messages(&history);
        let tokens = counter.tools(&tools()) + sent.iter().map(|m| counter.message(m)).sum::<u32>();
        assert!(tokens <= budget, "turn {turn}: {tokens} tokens sent, budget {budget}");
        assert_eq!(sent[0], history[0], "the system prompt stays");
        let last_turns = &history[history.len().saturating_sub(4)..];
        assert!(sent.ends_with(last_turns), "turn {turn}: the last turns stay");
        if !sent.starts_with(&previous) {
            prefix_changes += 1;
        }
        previous = sent;
        let _ = window.between_turns(&mut history, &tools());
    }
    assert!((1..=8).contains(&prefix_changes), "the window moved on {prefix_changes} of 40 turns");
    assert!(window.start > 1, "older turns left");
}

#[test]
fn answered_tool_results_of_older_turns_are_shortened_when_turns_leave() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(2_000, false), TokenCounter::Estimate);
    for turn in 1..=30 {
        play_turn(&mut history, turn);
        let _ = window.fit(&mut history, &tools());
    }
    let sent = window.messages(&history);
    let results: Vec<&ChatMessage> = sent.iter().filter(|m| m.role == Role::Tool).collect();
    assert!(results.len() >= 2, "{results:?}");
    let newest = results.last().map(|m| m.content.clone()).unwrap_or_default();
    assert!(!newest.starts_with(shorten::SHORTENED_MARK), "a result of the newest turn stays whole");
    let shortened: Vec<&&ChatMessage> =
        results.iter().filter(|m| m.content.starts_with(shorten::SHORTENED_MARK)).collect();
    assert!(!shortened.is_empty(), "older answered results are shortened");
    for result in shortened {
        assert!(result.content.contains("status=shipped") && result.content.contains("eta=Friday"), "{result:?}");
        assert!(!result.content.contains("item number"), "{result:?}");
    }
}

#[test]
fn the_summary_is_written_between_turns_and_then_replaces_the_folded_turns() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(1_500, true), TokenCounter::Estimate);
    let mut fold = None;
    let mut turn = 0;
    while fold.is_none() {
        turn += 1;
        assert!(turn < 40, "no fold was started");
        play_turn(&mut history, turn);
        assert!(window.fit(&mut history, &tools()).is_none(), "the early fold comes before the budget forces one");
        fold = window.between_turns(&mut history, &tools());
    }
    let Some(fold) = fold else { return };
    let before = window.messages(&history);
    assert_eq!(before.len(), history.len(), "the folded turns stay until the summary is ready");
    assert!(window.between_turns(&mut history, &tools()).is_none(), "one fold at a time");
    let asked = &fold.request.request.messages[1].content;
    assert!(asked.contains("Caller: This is turn 1;"), "{asked}");

    window.summary_ready(&mut history, fold.id, Some("Caller asked about orders 100 to 300.".into()));
    let after = window.messages(&history);
    assert_eq!(after[0], history[0]);
    assert_eq!(
        after[1],
        ChatMessage::system(format!("{}Caller asked about orders 100 to 300.", summary::SUMMARY_HEADING))
    );
    assert!(after.len() < before.len());
    assert_eq!(after[2].role, Role::User, "the window starts at a caller turn");
    assert!(window.tokens(&history, &tools()) <= 1_500);
    assert_eq!(window.summary(), Some("Caller asked about orders 100 to 300."));
}

#[test]
fn a_failed_summary_still_lets_the_turns_leave() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(1_500, true), TokenCounter::Estimate);
    let mut fold = None;
    for turn in 1..40 {
        play_turn(&mut history, turn);
        fold = window.between_turns(&mut history, &tools());
        if fold.is_some() {
            break;
        }
    }
    let Some(fold) = fold else { panic!("no fold was started") };
    let before = window.messages(&history).len();
    window.summary_ready(&mut history, fold.id, None);
    assert!(window.messages(&history).len() < before);
    assert_eq!(window.summary(), None);
}

#[test]
fn a_late_summary_of_an_earlier_fold_does_not_replace_a_newer_one() {
    let mut history = vec![ChatMessage::system("You are a phone agent.")];
    let mut window = ContextWindow::new(config(1_500, true), TokenCounter::Estimate);
    let mut folds = Vec::new();
    for turn in 1..60 {
        play_turn(&mut history, turn);
        folds.extend(window.fit(&mut history, &tools()));
        folds.extend(window.between_turns(&mut history, &tools()));
        if folds.len() >= 2 {
            break;
        }
    }
    assert!(folds.len() >= 2, "two folds were started");
    let (first, second) = (folds[0].id, folds[1].id);
    window.summary_ready(&mut history, second, Some("notes up to the second fold".into()));
    window.summary_ready(&mut history, first, Some("notes up to the first fold".into()));
    assert_eq!(window.summary(), Some("notes up to the second fold"));
}
