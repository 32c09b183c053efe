//! Turning an MCP `CallToolResult` into the single text the LLM's tool-result message carries.
//!
//! Text blocks are what the LLM should read; `structuredContent` is used only when there is no text (servers are
//! asked to mirror it into text, and feeding both doubles the tokens); images and audio cannot be spoken, so they are
//! only mentioned. The size cap keeps one chatty tool from flooding the prompt, with a marker so the LLM knows the
//! text was cut.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

use crate::tool_executor::ToolOutcome;

/// Maps a tool result to an outcome, capped at `max_chars` characters.
pub fn to_outcome(result: &CallToolResult, max_chars: usize) -> ToolOutcome {
    let text = cap(&result_text(result), max_chars);
    if result.is_error == Some(true) {
        ToolOutcome::error(text)
    } else {
        ToolOutcome::ok(text)
    }
}

/// The result as one string, uncapped.
pub fn result_text(result: &CallToolResult) -> String {
    let mut texts = Vec::new();
    let mut others = Vec::new();
    for block in &result.content {
        match block {
            ContentBlock::Text(text) => texts.push(text.text.clone()),
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents { text, .. } => texts.push(text.clone()),
                ResourceContents::BlobResourceContents { uri, .. } => others.push(format!("[binary resource {uri}]")),
                _ => others.push("[resource]".to_string()),
            },
            ContentBlock::Image(image) => others.push(format!("[image: {}]", image.mime_type)),
            ContentBlock::Audio(audio) => others.push(format!("[audio: {}]", audio.mime_type)),
            ContentBlock::ResourceLink(link) => others.push(format!("[link: {} {}]", link.name, link.uri)),
            _ => others.push("[unsupported content]".to_string()),
        }
    }
    if texts.is_empty() {
        if let Some(structured) = &result.structured_content {
            texts.push(structured.to_string());
        }
    }
    texts.extend(others);
    if texts.is_empty() {
        return if result.is_error == Some(true) {
            "The tool failed without saying why.".to_string()
        } else {
            "The tool returned no content.".to_string()
        };
    }
    texts.join("\n")
}

/// Cuts `text` to at most `max_chars` characters including a marker saying how much was left out. A budget too
/// small for the marker gets a plain cut.
pub fn cap(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let marker = |omitted: usize| format!("\n[truncated: {omitted} more characters]");
    // The marker's length depends on the number it carries; size it for the worst case (nothing kept).
    let reserve = marker(total).chars().count();
    if max_chars <= reserve {
        return text.chars().take(max_chars).collect();
    }
    let keep = max_chars - reserve;
    let kept: String = text.chars().take(keep).collect();
    format!("{kept}{}", marker(total - keep))
}

#[cfg(test)]
mod tests {
    use rmcp::model::Resource;
    use serde_json::json;

    use super::*;

    fn result(content: Vec<ContentBlock>, structured: Option<serde_json::Value>, is_error: bool) -> CallToolResult {
        let mut r = if is_error { CallToolResult::error(content) } else { CallToolResult::success(content) };
        r.structured_content = structured;
        r
    }

    #[test]
    fn joins_text_blocks_and_ignores_structured_when_text_exists() {
        let r = result(vec![ContentBlock::text("a"), ContentBlock::text("b")], Some(json!({"x": 1})), false);
        assert_eq!(to_outcome(&r, 100), ToolOutcome::ok("a\nb"));
    }

    #[test]
    fn uses_structured_content_when_there_is_no_text() {
        let r = result(vec![], Some(json!({"status": "shipped"})), false);
        assert_eq!(to_outcome(&r, 100), ToolOutcome::ok(r#"{"status":"shipped"}"#));
    }

    #[test]
    fn is_error_becomes_an_error_outcome() {
        let r = result(vec![ContentBlock::text("no such order")], None, true);
        assert_eq!(to_outcome(&r, 100), ToolOutcome::error("no such order"));
        assert!(to_outcome(&result(vec![], None, true), 100).is_error);
    }

    #[test]
    fn mentions_media_and_links() {
        let link = ContentBlock::resource_link(Resource::new("file:///r.pdf", "receipt"));
        let r = result(vec![ContentBlock::image("AAAA", "image/png"), link, ContentBlock::text("done")], None, false);
        assert_eq!(result_text(&r), "done\n[image: image/png]\n[link: receipt file:///r.pdf]");
        assert_eq!(result_text(&result(vec![], None, false)), "The tool returned no content.");
    }

    #[test]
    fn caps_with_a_visible_marker_within_budget() {
        let long = "é".repeat(500);
        let capped = cap(&long, 100);
        assert!(capped.chars().count() <= 100, "{}", capped.chars().count());
        assert!(capped.contains("[truncated: "), "{capped}");
        assert!(capped.starts_with("éé"));
        assert_eq!(cap("short", 100), "short");
        assert_eq!(cap("abcdef", 3), "abc");
    }
}
