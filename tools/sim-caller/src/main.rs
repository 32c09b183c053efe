//! `sim-caller`: places one simulated Twilio call against a running `parley serve` and reports what came back.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use parley::twilio::messages::OutboundMessage;
use sim_caller::dialogue::{self, Dialogue};
use sim_caller::{tone, SimCall, StartOptions, TwilioAuth};

#[derive(Debug, Parser)]
#[command(about = "Plays Twilio's side of a Media Stream call against Parley")]
struct Args {
    /// Parley's media stream URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/twilio/media")]
    url: String,
    /// The URL Twilio would sign (Parley's public wss Stream URL, without a token); defaults to --url. With
    /// TWILIO_AUTH_TOKEN set, a stream token for the call is appended to both, as Parley's voice webhook does.
    #[arg(long)]
    signed_url: Option<String>,
    /// The call's CallSid (Twilio's are unique per call); a fixed test one by default.
    #[arg(long)]
    call_sid: Option<String>,
    /// Seconds of caller audio (a 440 Hz tone) to send, when no dialogue is given.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Speak a dialogue instead of a tone: a TOML script, or `order-status` for the built-in one.
    #[arg(long)]
    dialogue: Option<String>,
    /// Write the dialogue's measurements here as JSON.
    #[arg(long, requires = "dialogue")]
    report: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // With TWILIO_AUTH_TOKEN the upgrade carries what Twilio's would: the call's stream token and the signature.
    let auth = std::env::var("TWILIO_AUTH_TOKEN").ok().map(|auth_token| TwilioAuth {
        auth_token,
        signed_url: args.signed_url.clone().unwrap_or_else(|| args.url.clone()),
    });
    let mut start = StartOptions::default();
    if let Some(call_sid) = &args.call_sid {
        start.call_sid.clone_from(call_sid);
    }
    let mut call =
        SimCall::connect_as_twilio(&args.url, auth.as_ref(), &start.call_sid).await.context("connecting to Parley")?;
    call.start(&start)?;
    if let Some(dialogue) = &args.dialogue {
        return run_dialogue(call, dialogue, args.report.as_deref()).await;
    }
    let audio = tone(440.0, args.seconds * 1000, 8000);
    call.stream_audio(&audio).await?;
    // Give an echo agent time to play everything back.
    let wait = Duration::from_secs(u64::from(args.seconds) + 3);
    let expected_frames = args.seconds as usize * 50;
    let echoed = call
        .wait_until("the caller's audio to come back", wait, |log| {
            log.iter()
                .filter(|r| matches!(r, sim_caller::Received::Message { message: OutboundMessage::Media { .. }, .. }))
                .count()
                >= expected_frames
        })
        .await;
    if let Err(err) = echoed {
        eprintln!("sim-caller: {err}");
    }
    let messages = call.messages();
    let media = messages.iter().filter(|m| matches!(m, OutboundMessage::Media { .. })).count();
    let marks = messages.iter().filter(|m| matches!(m, OutboundMessage::Mark { .. })).count();
    let heard_ms = call.audio_received().len() / 8;
    call.send_stop()?;
    call.hang_up().await;
    println!(
        "sent {} ms of audio; received {media} media messages ({heard_ms} ms of audio) and {marks} marks",
        args.seconds * 1000
    );
    if media == 0 {
        bail!("Parley sent no audio back");
    }
    Ok(())
}

/// Speaks the dialogue, prints each line as it is said and the caller-side latencies, and fails on problems.
async fn run_dialogue(call: SimCall, name: &str, report_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = if name == "order-status" {
        dialogue::ORDER_STATUS.to_owned()
    } else {
        std::fs::read_to_string(name).with_context(|| format!("reading the dialogue {name}"))?
    };
    let script = Dialogue::parse(&text).with_context(|| format!("parsing the dialogue {name}"))?;
    let report = dialogue::run(call, &script, |line| println!("{line}")).await?;
    for line in &report.lines {
        let answer = line.answer_after_ms.map_or("no answer".to_owned(), |ms| format!("answered after {ms} ms"));
        let cut =
            line.clear_after_ms.map(|ms| format!(", agent cut off {ms} ms after the caller began")).unwrap_or_default();
        println!("  {:?}: {answer}{cut}", line.said);
    }
    if let Some(path) = report_path {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let problems = report.problems();
    if !problems.is_empty() {
        bail!("the dialogue did not go as scripted: {}", problems.join("; "));
    }
    Ok(())
}
