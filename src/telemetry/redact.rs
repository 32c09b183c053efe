//! Phone numbers in logs and spans, redacted when the operator asks for it.

/// Shows a number as its first two and last four characters (`+1******3030`) when `redact` is on.
pub fn phone_number(number: &str, redact: bool) -> String {
    if !redact {
        return number.to_owned();
    }
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let hidden = chars.len() - 6;
    chars[..2].iter().chain(std::iter::repeat_n(&'*', hidden)).chain(&chars[chars.len() - 4..]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_middle() {
        assert_eq!(phone_number("+12349013030", true), "+1******3030");
        assert_eq!(phone_number("+12349013030", false), "+12349013030");
        assert_eq!(phone_number("123", true), "***");
    }
}
