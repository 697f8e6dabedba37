//! The credentials file, one line `user:password`: `mount` logs in with it and `serve` checks
//! logins against it. One parser for both, so a file that mounts also serves and the other way
//! round. A leaf module: the client and the origin share it without sharing anything else.

/// `user:password`; the password may contain `:` (the line is split at the first one).
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.user)
    }
}

/// What is wrong with a credentials file. No variant carries text from the file: a line
/// without a `:` may be a bare password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("it holds no `user:password` line")]
    Missing,
    #[error("it holds more than one line; expected one line `user:password`")]
    ExtraLines,
    #[error("its line has no `:` between the user and the password (expected `user:password`)")]
    NoColon,
    #[error("the user before the `:` is empty")]
    EmptyUser,
    #[error("the password after the `:` is empty")]
    EmptyPassword,
}

impl Credentials {
    /// Parses the file's text: one non-blank line, whitespace around it ignored (blank lines,
    /// `\r\n` endings, an editor's trailing spaces), split at its first `:`; neither part may
    /// be empty.
    pub fn from_text(text: &str) -> Result<Credentials, CredentialsError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let line = lines.next().ok_or(CredentialsError::Missing)?;
        if lines.next().is_some() {
            return Err(CredentialsError::ExtraLines);
        }
        let (user, password) = line.split_once(':').ok_or(CredentialsError::NoColon)?;
        if user.is_empty() {
            return Err(CredentialsError::EmptyUser);
        }
        if password.is_empty() {
            return Err(CredentialsError::EmptyPassword);
        }
        Ok(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<(String, String), CredentialsError> {
        Credentials::from_text(text).map(|c| (c.user, c.password))
    }

    #[test]
    fn one_line_with_blank_lines_and_whitespace_around_it_is_read() {
        let expected = Ok(("trackfs".to_string(), "pa:ss:word".to_string()));
        for text in [
            "trackfs:pa:ss:word",
            "trackfs:pa:ss:word\n",
            "trackfs:pa:ss:word\r\n",
            "\n\n  trackfs:pa:ss:word \t\r\n\n",
        ] {
            assert_eq!(parsed(text), expected, "{text:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_without_showing_the_password() {
        for (text, error) in [
            ("", CredentialsError::Missing),
            (" \n\r\n", CredentialsError::Missing),
            ("s3cret", CredentialsError::NoColon),
            (":s3cret", CredentialsError::EmptyUser),
            ("user:", CredentialsError::EmptyPassword),
            ("user:s3cret\nother:s3cret", CredentialsError::ExtraLines),
        ] {
            assert_eq!(parsed(text), Err(error.clone()), "{text:?}");
            assert!(!error.to_string().contains("s3cret"));
        }
        let credentials = Credentials::from_text("user:s3cret").unwrap();
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
