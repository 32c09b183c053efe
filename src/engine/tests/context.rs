//! The context budget and model routing, on whole calls: what each model request carried, turn after turn.

use std::sync::Arc;

use super::doubles::{LlmTurn, TestLlm};
use super::{within, Call};
use crate::engine::config::ConversationConfig;
use crate::llm::context::summary::{FOLD_HEADING, SUMMARY_HEADING, SUMMARY_INSTRUCTIONS};
use crate::llm::context::tokens::TokenCounter;
use crate::llm::context::ContextConfig;
use crate::llm::openai::request::build_body;
use crate::llm::openai::OpenAiConfig;
use crate::llm::routing::{ModelRoute, RouteRules, ESCALATION_TOOL};
use crate::llm::{ChatMessage, FinishReason, LlmEvent, LlmRequest, Role, ToolCall};

const SYSTEM_PROMPT: &str = "You are the phone agent of a pet insurance company. Answer in one or two sentences.";

/// Things a caller says between the fact and the question: no names, no numbers.
const SMALL_TALK: [&str; 5] = [
    "Tell me more about what the basic plan covers, please.",
    "And what happens when the vet bill is higher than expected?",
    "How long does it usually take before a claim gets paid out?",
    "Can the cover be changed later in the year if we move house?",
    "Is there anything else that people often forget to ask about?",
];

/// A long spoken answer, so the history grows quickly.
fn agent_answer(turn: usize) -> String {
    format!(
        "That is a good question, and the short answer for turn {turn} is that it depends on the plan you pick, \
         the age of your pet, and whether the condition was known before the cover started; our team can walk you \
         through every detail of it whenever you like."
    )
}

fn is_summary_request(request: &LlmRequest) -> bool {
    request.messages.first().is_some_and(|m| m.content == SUMMARY_INSTRUCTIONS)
}

/// The test's note-taker, answering a summary request as a model would: it keeps the notes so far and every caller
/// line that names something (a capitalised word inside the sentence), and nothing else.
fn take_notes(request: &LlmRequest) -> String {
    let asked = request.messages.get(1).map(|m| m.content.clone()).unwrap_or_default();
    let (so_far, folded) = asked.split_once(FOLD_HEADING).unwrap_or(("", asked.as_str()));
    let mut notes: Vec<String> = so_far
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty() && !line.contains("(none yet)"))
        .map(str::to_owned)
        .collect();
    for line in folded.lines().filter_map(|line| line.strip_prefix("Caller: ")) {
        let names_something = line.split_whitespace().skip(1).any(|word| word.starts_with(char::is_uppercase));
        if names_something {
            notes.push(format!("The caller said: {line}"));
        }
    }
    notes.join("\n")
}

/// The test's model answering "what is my dog called": only from what the request carries.
fn recall_dog(request: &LlmRequest) -> String {
    let said = request.messages.iter().rev().skip(1).find_map(|m| {
        let at = m.content.find("dog is called ")?;
        let name: String = m.content[at + "dog is called ".len()..].chars().take_while(|c| c.is_alphabetic()).collect();
        Some(name)
    });
    match said {
        Some(name) => format!("Your dog is called {name}."),
        None => "I'm sorry, I don't know your dog's name.".into(),
    }
}

/// The next reply request; summary requests met on the way are answered by the note-taker.
async fn next_reply_request(call: &mut Call, summaries: &mut usize) -> LlmTurn {
    loop {
        let turn = call.next_request().await;
        if !is_summary_request(&turn.request) {
            return turn;
        }
        *summaries += 1;
        turn.say(&take_notes(&turn.request));
        turn.finish();
    }
}

/// Each message of the request as the OpenAI-compatible client sends it.
fn wire_messages(request: &LlmRequest) -> Vec<String> {
    let body = build_body(&OpenAiConfig::default(), request);
    body["messages"].as_array().map(|m| m.iter().map(|m| m.to_string()).collect()).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_forty_turn_call_stays_in_the_budget_and_remembers_turn_two_through_the_summary() {
    let budget = 2_500;
    let context = ContextConfig { max_tokens: budget, keep_last_turns: 3, ..ContextConfig::default() };
    let config = ConversationConfig { system_prompt: SYSTEM_PROMPT.into(), context, ..Call::quiet() };
    let mut call = Call::start(config, |_, _| {});
    let stt = call.next_session().await;
    let counter = TokenCounter::Estimate;
    let mut summaries = 0;
    let mut previous: Vec<String> = Vec::new();
    let mut prefix_kept = 0;
    let mut last_answer = String::new();
    for turn in 1..=40 {
        let words = match turn {
            2 => "By the way, my dog is called Biscuit.".to_owned(),
            40 => "Sorry, what is my dog called again?".to_owned(),
            _ => SMALL_TALK[turn % SMALL_TALK.len()].to_owned(),
        };
        call.speak(400).await;
        call.silence(100).await;
        stt.final_words(&words).await;
        let request = next_reply_request(&mut call, &mut summaries).await;
        let messages = &request.request.messages;

        let sent = counter.tools(&request.request.tools) + messages.iter().map(|m| counter.message(m)).sum::<u32>();
        assert!(sent <= budget, "turn {turn}: {sent} tokens sent, the budget is {budget}");
        assert_eq!(messages[0], ChatMessage::system(SYSTEM_PROMPT), "turn {turn}: the system prompt stays");
        assert_eq!(request.last_user_text(), words);
        if turn > 1 {
            let before = &messages[messages.len() - 3..messages.len() - 1];
            assert_eq!(before[1], ChatMessage::assistant(agent_answer(turn - 1)), "turn {turn}: the last reply stays");
            assert_eq!(before[0].role, Role::User, "turn {turn}: the last caller turn stays");
        }
        let wire = wire_messages(&request.request);
        if wire.starts_with(&previous) {
            prefix_kept += 1;
        }
        previous = wire;

        last_answer = if turn == 40 { recall_dog(&request.request) } else { agent_answer(turn) };
        if turn == 40 {
            let outside_the_notes = messages.iter().filter(|m| !m.content.starts_with(SUMMARY_HEADING));
            assert!(
                outside_the_notes.clone().all(|m| !m.content.contains("Biscuit")),
                "turn 2 has left the window; only the notes can carry the name"
            );
        }
        request.say(&last_answer);
        request.finish();
        let _ = call.next_report().await;
    }
    assert_eq!(last_answer, "Your dog is called Biscuit.");
    assert!(summaries >= 1, "no running summary was written");
    // The prefix changes only when older turns leave (or a summary lands): a cache hit on most turns.
    assert!(prefix_kept >= 30, "only {prefix_kept} of 40 requests began with the previous one, byte for byte");
}

#[tokio::test(start_paused = true)]
async fn consecutive_requests_share_a_byte_identical_prefix_up_to_the_newest_turn() {
    let mut call = Call::start(Call::quiet(), |_, _| {});
    let stt = call.next_session().await;
    let mut requests = Vec::new();
    for words in ["Where is my order?", "It is order four five six.", "Thanks, and the other one?"] {
        let turn = call.caller_turn(&stt, words).await;
        requests.push(wire_messages(&turn.request));
        turn.say("Let me check that for you, it is on its way.");
        turn.finish();
        let _ = call.next_report().await;
    }
    for pair in requests.windows(2) {
        assert!(pair[1].starts_with(&pair[0]), "{:?}\nis not the start of\n{:?}", pair[0], pair[1]);
        assert_eq!(pair[1].len(), pair[0].len() + 2, "the reply and the new caller turn are all that is added");
    }
}

fn routed(rules: RouteRules) -> (Arc<ModelRoute>, tokio::sync::mpsc::UnboundedReceiver<LlmTurn>) {
    let (large, requests) = TestLlm::new();
    (Arc::new(ModelRoute { large, rules }), requests)
}

#[tokio::test(start_paused = true)]
async fn a_long_caller_turn_goes_to_the_larger_model_and_the_next_one_back() {
    let rules = RouteRules { model: "large".into(), caller_words_over: 12, ..RouteRules::default() };
    let (route, mut large) = routed(rules);
    let mut call = Call::start_with(Call::quiet(), |deps| deps.route = Some(route), |_, _| {});
    let stt = call.next_session().await;

    let first = call.caller_turn(&stt, "Where is my order?").await;
    first.say("It shipped on Monday.");
    first.finish();
    let _ = call.next_report().await;

    call.speak(400).await;
    call.silence(100).await;
    let long = "I ordered two kettles and a towel last week but only one kettle came and the towel is the wrong colour";
    stt.final_words(long).await;
    let second = within("a request to the larger model", large.recv()).await;
    assert!(second.last_user_text().contains("wrong colour"));
    assert!(call.llm.try_recv().is_err(), "the fast model was not asked");
    second.say("I'm sorry about that; I'll send the missing kettle and a new towel.");
    second.finish();
    let _ = call.next_report().await;

    let third = call.caller_turn(&stt, "Thank you, that's all.").await;
    assert_eq!(third.last_user_text(), "Thank you, that's all.");
    assert!(large.try_recv().is_err(), "the next turn went back to the fast model");
    third.say("You're welcome.");
    third.finish();
}

#[tokio::test(start_paused = true)]
async fn the_fast_model_can_hand_a_turn_to_the_larger_one() {
    let rules = RouteRules { model: "large".into(), escalation_tool: true, ..RouteRules::default() };
    let (route, mut large) = routed(rules);
    let mut call = Call::start_with(Call::quiet(), |deps| deps.route = Some(route), |_, _| {});
    let stt = call.next_session().await;

    let first = call.caller_turn(&stt, "Can I claim for two vets in one month under the old plan?").await;
    assert!(first.request.tools.iter().any(|tool| tool.name == ESCALATION_TOOL), "the fast model is offered it");
    let handover = ToolCall { id: "call_1".into(), name: ESCALATION_TOOL.into(), arguments: "{}".into() };
    let _ = first.answer.send(Ok(LlmEvent::ToolCalls(vec![handover])));
    let _ =
        first.answer.send(Ok(LlmEvent::Finished { reason: FinishReason::ToolCalls, usage: None, request_id: None }));
    drop(first);

    let second = within("the larger model's round", large.recv()).await;
    assert!(second.request.tools.iter().all(|tool| tool.name != ESCALATION_TOOL), "not offered to the larger model");
    let last = second.request.messages.last().cloned().unwrap_or_else(|| ChatMessage::user(""));
    assert_eq!(last.role, Role::Tool, "the handover is answered in the history");
    second.say("Yes: under the old plan both visits count as one claim.");
    second.finish();
    let _ = call.next_report().await;

    let next = call.caller_turn(&stt, "Great, thanks.").await;
    assert!(next.request.tools.iter().any(|tool| tool.name == ESCALATION_TOOL), "back on the fast model");
    assert!(large.try_recv().is_err());
}
