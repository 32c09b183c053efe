//! Server-Sent Events framing, as a pure incremental parser.
//!
//! Both LLM wire formats Parley speaks (OpenAI Chat Completions and Anthropic Messages) stream their replies as SSE
//! over an HTTP response body. Network reads split that body at arbitrary byte positions, so the parser buffers
//! partial lines (including a `\r\n` pair or a UTF-8 character cut in two) and hands out only complete events. It
//! does no I/O, so it is tested by feeding it bytes.

/// One dispatched event: the `data:` lines joined by `\n`, plus the optional `event:` name and `id:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server names its events (Anthropic does, OpenAI does not).
    pub event: Option<String>,
    /// The payload: every `data:` line of the event, joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Incremental SSE parser: push body bytes as they arrive, get back the events they completed.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous byte was `\r`, so a leading `\n` in the next push belongs to the same line ending.
    skip_lf: bool,
    /// Whether any byte was seen yet (a UTF-8 byte order mark may only appear first).
    started: bool,
    /// The event being assembled from its fields.
    pending: PendingEvent,
}

#[derive(Debug, Default)]
struct PendingEvent {
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the body; returns every event completed by it, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut input = bytes;
        if !self.started && !input.is_empty() {
            self.started = true;
            input = input.strip_prefix(BOM).unwrap_or(input);
        }
        for &byte in input {
            if std::mem::take(&mut self.skip_lf) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' | b'\r' => {
                    self.skip_lf = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, &mut events);
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    /// Ends the stream. A last event without its closing blank line is still delivered: some OpenAI-compatible
    /// servers end the body right after `data: [DONE]`, and losing that line would look like a truncated reply.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut events);
        }
        self.dispatch(&mut events);
        events
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(b":") {
            return; // comment / keep-alive
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.pending.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.pending.has_data = true;
            }
            "event" => self.pending.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored, as the SSE spec says
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let pending = std::mem::take(&mut self.pending);
        if pending.has_data {
            events.push(SseEvent { event: pending.event, data: pending.data, id: pending.id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn parses_data_events_separated_by_blank_lines() {
        let mut parser = SseParser::new();
        let events = parser.push(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(data(&events), vec!["{\"a\":1}", "[DONE]"]);
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn holds_partial_lines_until_complete() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: hel").is_empty());
        assert!(parser.push(b"lo\n").is_empty());
        assert_eq!(data(&parser.push(b"\n")), vec!["hello"]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_events() {
        let body = "event: message_start\r\ndata: {\"t\":\"é\"}\r\n\r\n: ping\r\n\r\ndata: x\r\r";
        let mut whole = SseParser::new();
        let expected = whole.push(body.as_bytes());
        let mut split = SseParser::new();
        let mut got = Vec::new();
        for byte in body.as_bytes() {
            got.extend(split.push(std::slice::from_ref(byte)));
        }
        assert_eq!(got, expected);
        assert_eq!(data(&got), vec!["{\"t\":\"é\"}", "x"]);
        assert_eq!(got[0].event.as_deref(), Some("message_start"));
    }

    #[test]
    fn crlf_split_across_pushes_is_one_line_ending() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: a\r").is_empty());
        assert!(parser.push(b"\ndata: b\r").is_empty());
        assert_eq!(data(&parser.push(b"\n\r\n")), vec!["a\nb"]);
    }

    #[test]
    fn joins_multiple_data_lines_and_ignores_comments_and_unknown_fields() {
        let mut parser = SseParser::new();
        let events = parser.push(b": keep-alive\nretry: 100\nfoo: bar\ndata: one\ndata:two\nid: 7\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "one\ntwo");
        assert_eq!(events[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"\n\n\nevent: ping\n\n").is_empty());
    }

    #[test]
    fn strips_a_leading_byte_order_mark() {
        let mut parser = SseParser::new();
        assert_eq!(data(&parser.push(b"\xEF\xBB\xBFdata: x\n\n")), vec!["x"]);
    }

    #[test]
    fn finish_flushes_an_unterminated_last_event() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: [DONE]").is_empty());
        assert_eq!(data(&parser.finish()), vec!["[DONE]"]);
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        let mut parser = SseParser::new();
        assert_eq!(data(&parser.push(b"data\n\n")), vec![""]);
    }
}
