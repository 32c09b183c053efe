//! The TwiML answer that connects a call to Parley's bidirectional Media Stream.

use quick_xml::escape::escape;

/// What goes into `<Connect><Stream>`.
#[derive(Debug, Clone, Default)]
pub struct ConnectStream {
    /// `wss://…/twilio/media`, absolute, with no query string (Twilio refuses one).
    pub url: String,
    /// Where Twilio reports `stream-started` / `stream-stopped` / `stream-error`.
    pub status_callback: Option<String>,
    /// `<Parameter>`s delivered back in `start.customParameters`.
    pub parameters: Vec<(String, String)>,
}

impl ConnectStream {
    /// Renders the full TwiML document.
    pub fn render(&self) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>");
        xml.push_str(&format!("<Stream url=\"{}\"", escape(self.url.as_str())));
        if let Some(callback) = &self.status_callback {
            xml.push_str(&format!(" statusCallback=\"{}\" statusCallbackMethod=\"POST\"", escape(callback.as_str())));
        }
        xml.push('>');
        for (name, value) in &self.parameters {
            xml.push_str(&format!(
                "<Parameter name=\"{}\" value=\"{}\"/>",
                escape(name.as_str()),
                escape(value.as_str())
            ));
        }
        xml.push_str("</Stream></Connect></Response>");
        xml
    }
}

/// Twilio's limit on one `<Parameter>`: name and value together must stay under 500 characters.
pub const MAX_PARAMETER_CHARS: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_stream_with_parameters_and_callback() {
        let twiml = ConnectStream {
            url: "wss://sidecar.example.com/twilio/media".into(),
            status_callback: Some("https://sidecar.example.com/twilio/stream-status".into()),
            parameters: vec![("tenant".into(), "acme".into()), ("from".into(), "+1555 <&\"'>".into())],
        }
        .render();
        assert!(twiml.starts_with("<?xml"));
        assert!(twiml.contains("<Connect><Stream url=\"wss://sidecar.example.com/twilio/media\""));
        assert!(twiml.contains("statusCallback=\"https://sidecar.example.com/twilio/stream-status\""));
        assert!(twiml.contains("<Parameter name=\"tenant\" value=\"acme\"/>"));
        assert!(twiml.contains("value=\"+1555 &lt;&amp;&quot;&apos;&gt;\""));
        assert!(twiml.ends_with("</Stream></Connect></Response>"));
    }

    #[test]
    fn omits_callback_when_not_configured() {
        let twiml = ConnectStream { url: "wss://h/twilio/media".into(), ..Default::default() }.render();
        assert!(!twiml.contains("statusCallback"));
    }
}
