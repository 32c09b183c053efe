//! What every provider's settings share: the API key read from the environment variable its section names, and
//! errors that name the missing key or setting. Each provider's settings type lives in the provider's own file.

use crate::config::read_secret;

/// Why a provider section cannot become a working client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{env} is not set: [{section}] needs an API key")]
    MissingKey { env: String, section: &'static str },
    #[error("{section}.{field} is not set")]
    MissingSetting { section: &'static str, field: &'static str },
}

/// The key in `env`; a missing one is recorded in `errors` when `required`.
pub fn api_key(env: &str, section: &'static str, required: bool, errors: &mut Vec<SettingsError>) -> Option<String> {
    let value = read_secret(env).map(|s| s.expose().to_owned());
    if value.is_none() && required {
        errors.push(SettingsError::MissingKey { env: env.to_owned(), section });
    }
    value
}

/// A required setting that is empty.
pub fn required(value: &str, section: &'static str, field: &'static str, errors: &mut Vec<SettingsError>) {
    if value.trim().is_empty() {
        errors.push(SettingsError::MissingSetting { section, field });
    }
}

/// OpenAI's own API needs a key; a self-hosted OpenAI-compatible server (any other `base_url`) may not.
pub fn is_openai_api(base_url: Option<&str>) -> bool {
    base_url.is_none_or(|url| url::Url::parse(url).is_ok_and(|u| u.host_str() == Some("api.openai.com")))
}

/// The configuration, or every error found building it.
pub fn finish<T>(config: T, errors: Vec<SettingsError>) -> Result<T, Vec<SettingsError>> {
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}
